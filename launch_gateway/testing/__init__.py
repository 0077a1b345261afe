"""Test helpers users may run too: a local imitation of the Launch API, and the demo built on it.

Not part of the production image (the Dockerfile leaves this package out): the imitation can import
and run arbitrary `module:function` code as a model.
"""
