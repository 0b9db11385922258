// Package ingest owns Vigil's data plane: the POST /v1/ingest handler, the
// strict decoder of readings, the device and gateway registry with hashed
// keys, and the producer that puts accepted readings on the raw topic. The
// reading itself is a contract (package contract).
package ingest
