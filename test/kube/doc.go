// Package kube tests the Helm chart charts/dramatiq-exporter and the
// Kubernetes examples under deploy/: it renders them with the real Helm and
// decodes every object strictly into its upstream Go type (Kubernetes,
// prometheus-operator, KEDA).
//
// It is a module of its own so that those API types, and the client-go and
// controller-runtime trees KEDA's types import, stay out of the exporter's
// go.mod. `make test` runs it; by hand: cd test/kube && go test ./...
package kube
