# The checkpoint server image: a venv built in one stage, copied into a slim runtime stage.
# Build from the repository root: docker build -t checkpoint-server .
FROM python:3.11-slim AS build
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY gen/python gen/python
COPY server server
# The client too: `checkpoint-server threads ...` (the operator's command) runs its CLI.
COPY python_client python_client
RUN pip install ./gen/python ./server ./python_client

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /data --create-home checkpoint
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    CHECKPOINT_SERVER_DATABASE_URL=sqlite:////data/checkpoints.db \
    CHECKPOINT_SERVER_LISTEN=0.0.0.0:50051
USER 10001
WORKDIR /data
VOLUME /data
EXPOSE 50051 9464
# Asks the standard gRPC health service from inside the container; it needs no token. With
# CHECKPOINT_SERVER_TLS_CERT set it speaks TLS, verifying with LGCHECKPOINT_CA_FILE (and, under
# mTLS, presenting LGCHECKPOINT_CERT_FILE/LGCHECKPOINT_KEY_FILE).
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["checkpoint-server", "health"]
STOPSIGNAL SIGTERM
# On all addresses the server starts only with a policy file (mount one and set
# CHECKPOINT_SERVER_AUTH_FILE, see the README's Security) or with `serve --insecure-no-auth`.
ENTRYPOINT ["checkpoint-server"]
CMD ["serve"]
