// Package deploy holds Perch's deployment manifests: the Dockerfile, a Docker Compose file for
// a single-host trial, the NATS JetStream configuration and Kubernetes manifests (see
// README.md). This package holds only their checks: its tests parse every manifest and compare
// what they pass to perch with the flags cmd/perch really defines.
package deploy
