# Multi-stage build of the one binary. DuckDB is linked in through cgo, so
# the build stage needs gcc and the runtime a glibc base.
# (No Docker engine runs on the development machines; this file is not
# exercised by the tests.)
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=1 go build -trimpath -ldflags "-s -w" -o /out/vigil .

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/vigil /usr/local/bin/vigil
# run as an unprivileged user that owns the data directory
RUN useradd --system --uid 10001 --home-dir /var/lib/vigil --create-home vigil
USER vigil
WORKDIR /var/lib/vigil
EXPOSE 8080
# reachable from outside the container (Vigil warns: plain HTTP; put TLS in front)
ENV VIGIL_HTTP_ADDR=:8080
# The embedded broker listens on the container's loopback; use external
# Kafka (VIGIL_KAFKA_BROKERS) when tools outside the container must read it.
ENTRYPOINT ["vigil"]
CMD ["serve"]
