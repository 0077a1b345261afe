"""Who may call what: tenants and their keys, upstream credentials, task handles, callback policy, reloads."""
