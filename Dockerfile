# logfwd's container image: the node forwarder of DaemonSet.yaml.
#
#   docker build -t logfwd:0.1.0 .
#
# Stage 1 builds the wheels (logfwd with its compiled Cython hot path, and systemd-python
# against libsystemd); stage 2 installs them into a slim runtime with no compiler.

FROM python:3.11-slim-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev libsystemd-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY conf ./conf
COPY logfwd ./logfwd
RUN pip wheel --no-cache-dir --no-deps -w /wheels . \
 && pip wheel --no-cache-dir -w /wheels "$(ls /wheels/logfwd-*.whl)"

FROM python:3.11-slim-bookworm AS runtime
# libsystemd0: the journal input (systemd-python) reads the node's journal through it.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libsystemd0 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels logfwd \
 && rm -rf /wheels \
 && logfwd --version
COPY conf/kubernetes.yaml /etc/logfwd/logfwd.yaml
EXPOSE 2020
ENTRYPOINT ["logfwd", "-c", "/etc/logfwd/logfwd.yaml"]
