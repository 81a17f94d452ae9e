// Package check validates the files of deploy/ offline: the Kubernetes
// manifests decode strictly into the k8s.io/api types, the Dockerfile
// names paths that exist, every metric the Prometheus rules and the
// Grafana dashboard use is one that a running presenced exports, and
// WebSocket clients (the Go SDK) work through nginx and HAProxy run with
// the shipped configs. It is a module of its own so that the
// validation-only dependencies (k8s.io/api, sigs.k8s.io/yaml,
// Prometheus's rule parser) stay out of the server's go.mod; the SDK
// comes from the root module through a replace. Run it with
// `make deploy-check`.
package check
