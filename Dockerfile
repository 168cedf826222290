# syntax=docker/dockerfile:1
# Build: a static binary (no cgo) from the module, with its version stamped.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X github.com/motemq/mote/broker.Version=${VERSION}" \
      -o /out/mote ./cmd/mote \
 && mkdir -p /out/data

# Run: nothing but the binary, as an unprivileged user, data on a volume.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/mote /usr/local/bin/mote
COPY --from=build --chown=65532:65532 /out/data /data
USER 65532:65532
ENV MOTE_DATA_DIR=/data
VOLUME ["/data"]
EXPOSE 1883 8083 8080
ENTRYPOINT ["/usr/local/bin/mote"]
CMD ["serve"]
