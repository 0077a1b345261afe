# launch-gateway: the gRPC gateway in front of a Scale Launch API.
#   docker build -t launch-gateway:0.1.0 .
#   docker run -p 50051:50051 -e LAUNCH_API_KEY=... launch-gateway:0.1.0 serve --upstream https://api.scale.com/v1/launch
# The SDK and the server and tracing extras at the versions in constraints.txt; the Launch imitation
# (launch_gateway.testing) is left out by .dockerignore, so `local-launch` and `demo` say so and exit.
FROM python:3.11.7-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src

# Dependencies first, in their own layer: a code change rebuilds only the layers below. The list is
# pyproject's (the SDK's and the server and tracing extras'), the versions are constraints.txt's; setuptools is the
# build backend for the next step; both it and pip come from the constraints too.
COPY pyproject.toml constraints.txt ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
extras = p['optional-dependencies']; print('\n'.join(p['dependencies'] + extras['server'] + extras['tracing']))" \
 > requirements.txt \
 && pip install -c constraints.txt pip setuptools \
 && pip install -c constraints.txt -r requirements.txt

COPY README.md LICENSE ./
COPY launch_gateway ./launch_gateway
RUN pip install --no-deps --no-build-isolation . \
 && cd / && rm -rf /src \
 && python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('launch_gateway.testing') is not None)"

RUN groupadd --system --gid 10001 gateway \
 && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home gateway
WORKDIR /app
# Numeric, so Kubernetes' runAsNonRoot can check it; deploy/kubernetes/deployment.yaml runs as the same ids.
USER 10001:10001
EXPOSE 50051 9097
# The container listens on every interface: gRPC on 50051, /metrics /healthz /readyz on 9097. These
# variables override the config file's server.host and metrics.host (environment beats the file).
ENV LAUNCH_GATEWAY_SERVER_HOST=0.0.0.0 LAUNCH_GATEWAY_METRICS_HOST=0.0.0.0
# Liveness, not readiness: the gRPC health service's `liveness` entry is SERVING while the process
# serves, whether or not Launch answers, so an upstream outage does not mark every container unhealthy.
# (Add --ca-file when the server uses TLS.)
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 \
  CMD ["launch-gateway", "health", "--liveness", "--address", "127.0.0.1:50051"]
ENTRYPOINT ["launch-gateway"]
CMD ["serve"]
