# launch-gateway: the gRPC gateway in front of a Scale Launch API.
#   docker build -t launch-gateway .
#   docker run -p 50051:50051 -e LAUNCH_API_KEY=... launch-gateway serve --upstream https://api.scale.com/v1/launch
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY launch_gateway ./launch_gateway
RUN pip install . && useradd --system --uid 10001 --home-dir /app gateway

USER gateway
EXPOSE 50051 9090
# The container listens on every interface: gRPC on 50051, /metrics /healthz /readyz on 9090. These
# variables override the config file's server.host and metrics.host (environment beats the file).
# The health check asks the standard gRPC health service (add --ca-file when the server uses TLS).
ENV LAUNCH_GATEWAY_SERVER_HOST=0.0.0.0 LAUNCH_GATEWAY_METRICS_HOST=0.0.0.0
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 \
  CMD ["launch-gateway", "health", "--address", "127.0.0.1:50051"]
ENTRYPOINT ["launch-gateway"]
CMD ["serve"]
