package oauth

import (
	"encoding/json"
	"fmt"
	"net/http"
)

// RFC 6749 §5.2 error codes, and RFC 8707's invalid_target.
const (
	ErrInvalidRequest       = "invalid_request"
	ErrInvalidClient        = "invalid_client"
	ErrInvalidGrant         = "invalid_grant"
	ErrUnauthorizedClient   = "unauthorized_client"
	ErrUnsupportedGrantType = "unsupported_grant_type"
	ErrInvalidScope         = "invalid_scope"
	ErrInvalidTarget        = "invalid_target"
	ErrServerError          = "server_error"
	ErrUnavailable          = "temporarily_unavailable"
)

// Error is an RFC 6749 §5.2 error answer. Field is the parameter at fault,
// named first in the description.
type Error struct {
	Code        string
	Field       string
	Description string
	// Status is the HTTP status; 0 means 400 (401 for invalid_client).
	Status int
}

func (e *Error) Error() string { return e.Code + ": " + e.Description }

func errorf(code, field, format string, args ...any) *Error {
	d := fmt.Sprintf(format, args...)
	if field != "" {
		d = field + ": " + d
	}
	return &Error{Code: code, Field: field, Description: d}
}

func (e *Error) status() int {
	switch {
	case e.Status != 0:
		return e.Status
	case e.Code == ErrInvalidClient:
		return http.StatusUnauthorized
	}
	return http.StatusBadRequest
}

func writeError(w http.ResponseWriter, e *Error) {
	if e.Code == ErrInvalidClient {
		w.Header().Set("WWW-Authenticate", `Basic realm="mandate"`)
	}
	writeJSON(w, e.status(), map[string]string{"error": e.Code, "error_description": e.Description})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Pragma", "no-cache")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeJSONCached(w http.ResponseWriter, v any) {
	w.WriteHeader(http.StatusOK)
	_ = json.NewEncoder(w).Encode(v)
}
