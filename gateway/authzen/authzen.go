// Package authzen serves the OpenID AuthZEN Authorization API 1.0 on
// mandate's HTTP port: access evaluation (single and batch), the three
// searches and the metadata document. It decides nothing itself: every
// question goes to mandate's own services, called in process through the
// gRPC server's interceptors, so keys and roles, the decision cache, the
// audit trail, the metrics and the four-leg agent check apply exactly as
// they do to POST /v1/check.
//
// The handlers are plain net/http rather than grpc-gateway, because AuthZEN
// clients compare JSON strictly (no extra keys) and expect 400 for a field of
// the wrong type.
package authzen

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/mandate-dev/mandate/gateway"
	"github.com/mandate-dev/mandate/internal/requestid"
	mandatev1 "github.com/mandate-dev/mandate/proto/mandate/v1"
)

// Paths of the endpoints.
const (
	PathEvaluation     = "/access/v1/evaluation"
	PathEvaluations    = "/access/v1/evaluations"
	PathSearchSubject  = "/access/v1/search/subject"
	PathSearchResource = "/access/v1/search/resource"
	PathSearchAction   = "/access/v1/search/action"
	PathMetadata       = "/.well-known/authzen-configuration"
)

// ReasonHeader asks for the decision's reason code and id in the response
// context: send "Mandate-Reason-Code: true". Without it a response carries
// only what AuthZEN defines, because interop clients compare answers
// strictly and an extra key fails them.
const ReasonHeader = "Mandate-Reason-Code"

// maxEvaluations bounds one batch, as CheckBulk does.
const maxEvaluations = 1000

// Config configures the AuthZEN endpoints.
type Config struct {
	// Check answers evaluations: mandate's CheckService, in process and
	// behind its interceptors (service.InProcess). Never nil.
	Check mandatev1.CheckServiceServer
	// Search answers searches, likewise. Never nil.
	Search mandatev1.SearchServiceServer
	// Authorize checks the caller's Authorization header against the roles
	// of a gRPC method, before anything else is done with the request: a
	// batch whose items are all denied without asking Check, for example,
	// must still refuse an unknown key. Never nil.
	Authorize func(ctx context.Context, authorization, method string) error
	// BaseURL is the PDP's public URL, advertised in the metadata document.
	// Default: the scheme and host the request came in on.
	BaseURL string
	// Log is the logger. Default slog.Default().
	Log *slog.Logger
}

// Handler serves the AuthZEN endpoints.
type Handler struct {
	cfg    Config
	check  mandatev1.CheckServiceServer
	search mandatev1.SearchServiceServer
}

// Validate reports whether the config is usable.
func (c *Config) Validate() error {
	if c.Check == nil || c.Search == nil || c.Authorize == nil {
		return errors.New("authzen: Check, Search and Authorize are required")
	}
	return nil
}

// New returns the AuthZEN handler.
func New(cfg Config) (*Handler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	cfg.BaseURL = strings.TrimSuffix(cfg.BaseURL, "/")
	return &Handler{cfg: cfg, check: cfg.Check, search: cfg.Search}, nil
}

// Routes returns the handlers by ServeMux pattern, for gateway.Config.Extra.
// Any other method on these paths gets 405.
func (h *Handler) Routes() map[string]http.Handler {
	m := Methods()
	routes := map[string]http.Handler{
		"POST " + PathEvaluation:     h.endpoint(m[PathEvaluation], h.evaluation),
		"POST " + PathEvaluations:    h.endpoint(m[PathEvaluations], h.evaluations),
		"POST " + PathSearchSubject:  h.endpoint(m[PathSearchSubject], h.searchSubject),
		"POST " + PathSearchResource: h.endpoint(m[PathSearchResource], h.searchResource),
		"POST " + PathSearchAction:   h.endpoint(m[PathSearchAction], h.searchAction),
		"GET " + PathMetadata:        http.HandlerFunc(h.metadata),
	}
	patterns := make([]string, 0, len(routes))
	for pattern := range routes {
		patterns = append(patterns, pattern)
	}
	for _, pattern := range patterns {
		method, path, _ := strings.Cut(pattern, " ")
		routes[path] = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", method)
			writeJSON(w, http.StatusMethodNotAllowed, errorBody(codes.Unimplemented, "method "+r.Method+" is not allowed on "+r.URL.Path+"; use "+method))
		})
	}
	return routes
}

// call is one request on its way to the gRPC services.
type call struct {
	r      *http.Request
	ctx    context.Context // carries the caller's key and request id as incoming gRPC metadata
	reason bool            // the caller asked for reason codes
}

// Methods maps each AuthZEN endpoint that needs a key (all but the metadata
// document, each taking POST) to the gRPC method whose roles it takes.
func Methods() map[string]string {
	return map[string]string{
		PathEvaluation:     methodCheck,
		PathEvaluations:    methodCheck,
		PathSearchSubject:  methodLookupSubjects,
		PathSearchResource: methodLookupResources,
		PathSearchAction:   methodLookupActions,
	}
}

// The gRPC methods whose roles each endpoint takes.
const (
	methodCheck           = "/mandate.v1.CheckService/Check"
	methodLookupSubjects  = "/mandate.v1.SearchService/LookupSubjects"
	methodLookupResources = "/mandate.v1.SearchService/LookupResources"
	methodLookupActions   = "/mandate.v1.SearchService/LookupActions"
)

// endpoint authorizes the caller for method, reads the body, runs fn and
// writes its answer or its error.
func (h *Handler) endpoint(method string, fn func(c *call, body object) (any, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// One request id for every gRPC call the request makes, so that the
		// audit records of a batch share it; the caller's is echoed.
		id := requestid.Accept(r.Header.Get(requestid.Header))
		w.Header().Set(requestid.Header, id)
		authz := authorization(r)
		if err := h.cfg.Authorize(r.Context(), authz, method); err != nil {
			h.writeError(w, r, err)
			return
		}
		body, err := readBody(r)
		if err != nil {
			h.writeError(w, r, err)
			return
		}
		md := metadata.MD{}
		if authz != "" {
			md.Set("authorization", authz)
		}
		md.Set(strings.ToLower(requestid.Header), id)
		if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
			md.Set("x-forwarded-for", host) // the caller's address, for the audit trail
		}
		c := &call{r: r, ctx: metadata.NewIncomingContext(r.Context(), md), reason: strings.EqualFold(r.Header.Get(ReasonHeader), "true")}
		out, err := fn(c, body)
		if err != nil {
			h.writeError(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, out)
	})
}

// authorization accepts "Bearer <key>" and, because AuthZEN's interop
// harnesses send their configured key verbatim, a bare key too.
func authorization(r *http.Request) string {
	v := strings.TrimSpace(r.Header.Get("Authorization"))
	if v == "" {
		return ""
	}
	if scheme, _, ok := strings.Cut(v, " "); ok && strings.EqualFold(scheme, "bearer") {
		return v
	}
	return "Bearer " + v
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// writeError maps an error to HTTP: 400 for a bad payload, and for gRPC
// errors the same codes as the rest of the REST API, with a Bearer challenge
// on 401.
func (h *Handler) writeError(w http.ResponseWriter, r *http.Request, err error) {
	var br *badRequest
	var tl *tooLargeError
	switch {
	case errors.As(err, &br):
		writeJSON(w, http.StatusBadRequest, errorBody(codes.InvalidArgument, br.Error()))
		return
	case errors.As(err, &tl):
		writeJSON(w, http.StatusRequestEntityTooLarge, errorBody(codes.InvalidArgument, tl.Error()))
		return
	}
	// Errors from the services are statuses already mapped by the service's
	// one error mapper, their messages safe to show.
	st := status.Convert(err)
	switch st.Code() {
	case codes.Unauthenticated:
		w.Header().Set("WWW-Authenticate", `Bearer realm="mandate"`)
	case codes.Internal, codes.Unknown:
		h.cfg.Log.ErrorContext(r.Context(), "authzen: internal error", "path", r.URL.Path, "error", err)
	}
	writeJSON(w, gateway.HTTPStatus(st.Code()), errorBody(st.Code(), st.Message()))
}

func errorBody(code codes.Code, msg string) map[string]any {
	return map[string]any{"code": int(code), "message": msg, "details": []any{}}
}

// entityFields are the request fields whose InvalidArgument means "this
// names nothing mandate knows" (an unknown type or permission, an id too
// long to exist): a deny, or an empty search, rather than a 400.
var entityFields = map[string]bool{
	"subject": true, "resource": true, "permission": true, "subject_type": true, "resource_type": true,
}

// namesNothing reports whether err is mandate refusing a question because an
// entity or action it names cannot exist.
func namesNothing(err error) bool { return entityFields[fieldOf(err)] }

// fieldOf is the request field an InvalidArgument from mandate names, or "".
func fieldOf(err error) string {
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.InvalidArgument {
		return ""
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info.GetMetadata()["field"]
		}
	}
	return ""
}

// metadata serves the PDP metadata document. It needs no key.
func (h *Handler) metadata(w http.ResponseWriter, r *http.Request) {
	w.Header().Set(requestid.Header, requestid.Accept(r.Header.Get(requestid.Header)))
	base := h.cfg.BaseURL
	if base == "" {
		scheme := "http"
		if r.TLS != nil {
			scheme = "https"
		}
		base = scheme + "://" + r.Host
	}
	writeJSON(w, http.StatusOK, map[string]string{
		"policy_decision_point":       base,
		"access_evaluation_endpoint":  base + PathEvaluation,
		"access_evaluations_endpoint": base + PathEvaluations,
		"search_subject_endpoint":     base + PathSearchSubject,
		"search_resource_endpoint":    base + PathSearchResource,
		"search_action_endpoint":      base + PathSearchAction,
	})
}
