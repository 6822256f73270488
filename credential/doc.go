// Package credential issues and verifies agent credentials: mandate's own
// signed tokens (RFC 9068 access tokens with an RFC 8693 act chain), the
// keys that sign them, the humans' OIDC tokens they are exchanged for, and
// the scope they carry. It knows nothing of transports.
package credential
