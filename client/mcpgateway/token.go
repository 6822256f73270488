package mcpgateway

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"github.com/mandate-dev/mandate/client/middleware"
)

// Transitional agent tokens.
//
// mandate does not issue agent credentials yet. Until it does, an agent
// presents "mgw1.<agent id>.<mac>", where mac is HMAC-SHA256, keyed with a
// secret that only this gateway (and whoever provisions agents) holds, over
// the agent id. An agent cannot forge a token for another agent id without
// the secret, and the gateway checks every call with mandate, so a token for
// a revoked, expired or suspended agent opens nothing. Once mandate issues
// agent tokens (obtained by token exchange, the enterprise-managed pattern),
// the gateway will verify those instead and this mode will go away.

const tokenPrefix = "mgw1."

// MinSecretLen is the shortest gateway secret accepted.
const MinSecretLen = 32

// ValidateSecret reports whether secret is long enough.
func ValidateSecret(secret []byte) error {
	if len(secret) < MinSecretLen {
		return fmt.Errorf("the gateway secret must be at least %d bytes, got %d", MinSecretLen, len(secret))
	}
	return nil
}

func mac(secret []byte, agentID string) string {
	h := hmac.New(sha256.New, secret)
	h.Write([]byte("mandate-mcp-gateway/v1\x00" + agentID))
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil))
}

// MintToken makes the bearer token for agentID (bare "agt_…" or
// "agent:agt_…").
func MintToken(secret []byte, agentID string) (string, error) {
	if err := ValidateSecret(secret); err != nil {
		return "", err
	}
	sub, err := middleware.AgentSubject(agentID)
	if err != nil {
		return "", err
	}
	id := strings.TrimPrefix(sub, "agent:")
	return tokenPrefix + id + "." + mac(secret, id), nil
}

var errBadToken = errors.New("not a gateway token")

// verifyToken returns the subject ("agent:<id>") a token stands for.
func verifyToken(secret []byte, token string) (string, error) {
	rest, ok := strings.CutPrefix(token, tokenPrefix)
	if !ok {
		return "", errBadToken
	}
	id, sum, ok := strings.Cut(rest, ".")
	if !ok {
		return "", errBadToken
	}
	sub, err := middleware.AgentSubject(id)
	if err != nil || sub != "agent:"+id {
		return "", errBadToken
	}
	if !hmac.Equal([]byte(sum), []byte(mac(secret, id))) {
		return "", errBadToken
	}
	return sub, nil
}
