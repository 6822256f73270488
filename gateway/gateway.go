// Package gateway serves mandate's REST API, translated by grpc-gateway into
// in-process calls of mandate's services, plus the HTTP-only concerns: the
// OpenAPI document, health, body limits, request ids and the one mapping of
// gRPC codes to HTTP statuses that REST and AuthZEN share.
package gateway

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/mandate-dev/mandate/engine"
	"github.com/mandate-dev/mandate/internal/peercert"
	"github.com/mandate-dev/mandate/internal/requestid"
	mandatev1 "github.com/mandate-dev/mandate/proto/mandate/v1"
)

// OpenAPI is the generated OpenAPI (Swagger 2.0) document of the REST API.
//
//go:embed openapi.swagger.json
var OpenAPI []byte

// Config configures the REST gateway.
type Config struct {
	// MaxBodyBytes bounds request bodies; larger ones get 413. Default 1 MiB.
	MaxBodyBytes int64
	// Health reports whether the server can decide, with extra details for
	// the health output; nil means always healthy.
	Health func(ctx context.Context) (map[string]string, error)
	// Extra mounts more HTTP handlers by path, such as /metrics.
	Extra map[string]http.Handler
}

// Services is every mandate service. The server passes service.InProcess,
// which runs each call through the gRPC server's own interceptors, so REST
// keeps the same authentication, roles, request ids and errors as gRPC.
type Services interface {
	mandatev1.TaskServiceServer
	mandatev1.AgentServiceServer
	mandatev1.GrantServiceServer
	mandatev1.CheckServiceServer
	mandatev1.SchemaServiceServer
	mandatev1.RelationshipServiceServer
	mandatev1.AuditServiceServer
	mandatev1.ReviewServiceServer
	mandatev1.SearchServiceServer
	mandatev1.AccessRequestServiceServer
}

// Validate reports whether the config is usable.
func (c *Config) Validate() error {
	if c.MaxBodyBytes < 0 {
		return errors.New("gateway: MaxBodyBytes must not be negative")
	}
	return nil
}

// New returns the HTTP handler, calling svc in process: no loopback hop.
func New(ctx context.Context, svc Services, cfg Config) (http.Handler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = 1 << 20
	}
	// HTTPBodyMarshaler serves google.api.HttpBody responses (the CSV report) as they are.
	marshaler := &runtime.HTTPBodyMarshaler{Marshaler: &onePassJSON{runtime.JSONPb{
		MarshalOptions:   protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true},
		UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: false},
	}}}
	mux := runtime.NewServeMux(
		runtime.WithMarshalerOption(runtime.MIMEWildcard, marshaler),
		runtime.WithIncomingHeaderMatcher(incomingHeaders),
		runtime.WithOutgoingHeaderMatcher(outgoingHeaders),
		runtime.WithErrorHandler(errorHandler),
		runtime.WithRoutingErrorHandler(routingErrorHandler),
	)
	for _, err := range []error{
		mandatev1.RegisterTaskServiceHandlerServer(ctx, mux, svc),
		mandatev1.RegisterAgentServiceHandlerServer(ctx, mux, svc),
		mandatev1.RegisterGrantServiceHandlerServer(ctx, mux, svc),
		mandatev1.RegisterCheckServiceHandlerServer(ctx, mux, svc),
		mandatev1.RegisterSchemaServiceHandlerServer(ctx, mux, svc),
		mandatev1.RegisterRelationshipServiceHandlerServer(ctx, mux, svc),
		mandatev1.RegisterAuditServiceHandlerServer(ctx, mux, svc),
		mandatev1.RegisterReviewServiceHandlerServer(ctx, mux, svc),
		mandatev1.RegisterSearchServiceHandlerServer(ctx, mux, svc),
		mandatev1.RegisterAccessRequestServiceHandlerServer(ctx, mux, svc),
	} {
		if err != nil {
			return nil, fmt.Errorf("registering REST handlers: %w", err)
		}
	}

	root := http.NewServeMux()
	root.HandleFunc("GET /openapi.json", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(OpenAPI)
	})
	root.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		out := map[string]string{"status": "SERVING"}
		if cfg.Health != nil {
			details, err := cfg.Health(r.Context())
			for k, v := range details {
				out[k] = v
			}
			if err != nil {
				out["status"], out["error"] = "NOT_SERVING", err.Error()
				w.WriteHeader(http.StatusServiceUnavailable)
			}
		}
		_ = json.NewEncoder(w).Encode(out)
	})
	for path, h := range cfg.Extra {
		root.Handle(path, h)
	}
	root.Handle("/", longPollDeadline(mux))
	return withRetryAfter(withPeerCert(withRequestID(limitBody(cfg.MaxBodyBytes, root)))), nil
}

// longPollSlack is how long past its wait a long poll may take to answer.
const longPollSlack = 15 * time.Second

// longPollDeadline gives a long poll (GET /v1/access-requests/{id}?wait=…)
// the time it asks for: the server's write timeout is shorter than the
// longest wait, so the handler sets its own deadline. A wait the service
// refuses (malformed, above the maximum) keeps the server's deadline.
func longPollDeadline(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/v1/access-requests/") {
			if d, err := time.ParseDuration(r.URL.Query().Get("wait")); err == nil && d > 0 && d <= engine.MaxAccessRequestWait {
				_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(d + longPollSlack))
			}
		}
		next.ServeHTTP(w, r)
	})
}

// withPeerCert hands a client certificate that TLS verified to the services,
// which authenticate with it when no key is sent.
func withPeerCert(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 && len(r.TLS.VerifiedChains[0]) > 0 {
			r = r.WithContext(peercert.NewContext(r.Context(), r.TLS.VerifiedChains[0][0]))
		}
		next.ServeHTTP(w, r)
	})
}

// retryAfterSeconds is what a 503 tells the caller to wait: SpiceDB or the
// databases behind it are briefly unreachable, and mandate recovers on its own.
const retryAfterSeconds = "1"

// withRetryAfter gives every 503 a Retry-After header, whichever handler
// (REST, AuthZEN, health) wrote it.
func withRetryAfter(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		next.ServeHTTP(retryAfterWriter{w}, r)
	})
}

type retryAfterWriter struct{ http.ResponseWriter }

func (w retryAfterWriter) WriteHeader(code int) {
	if code == http.StatusServiceUnavailable && w.Header().Get("Retry-After") == "" {
		w.Header().Set("Retry-After", retryAfterSeconds)
	}
	w.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (w retryAfterWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// withRequestID gives every request an id, the caller's X-Request-Id when
// usable, and echoes it on every answer, errors and 404s included. The id
// travels on in the request's header, where the services' interceptor reads
// it, so the audit trail names the same id.
func withRequestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := requestid.Accept(r.Header.Get(requestid.Header))
		r.Header.Set(requestid.Header, id)
		w.Header().Set(requestid.Header, id)
		next.ServeHTTP(w, r)
	})
}

// HTTPStatus is the HTTP status of a gRPC code, for REST and AuthZEN alike:
// grpc-gateway's table, so the two never disagree.
func HTTPStatus(c codes.Code) int { return runtime.HTTPStatusFromCode(c) }

// onePassJSON is grpc-gateway's JSONPb with a decoder that parses a request
// body once: JSONPb first runs it through encoding/json to find where the
// value ends, then parses it again with protojson. A REST body is one value,
// so it is read whole (limitBody bounds it) and handed to protojson alone.
type onePassJSON struct{ runtime.JSONPb }

// NewDecoder decodes the one JSON value r holds.
func (j *onePassJSON) NewDecoder(r io.Reader) runtime.Decoder {
	return runtime.DecoderFunc(func(v any) error {
		raw, err := io.ReadAll(r)
		if err != nil {
			return err
		}
		msg, ok := v.(proto.Message)
		if !ok {
			return j.JSONPb.NewDecoder(bytes.NewReader(raw)).Decode(v)
		}
		if len(bytes.TrimSpace(raw)) == 0 {
			// An empty body is an empty request, as with JSONPb.
			return io.EOF
		}
		return j.UnmarshalOptions.Unmarshal(raw, msg)
	})
}

// limitBody refuses bodies over max with 413, and cuts off bodies that lie
// about their length.
func limitBody(max int64, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > max {
			writeError(w, http.StatusRequestEntityTooLarge, codes.InvalidArgument, fmt.Sprintf("body: larger than %d bytes", max))
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, max)
		next.ServeHTTP(w, r)
	})
}

func writeError(w http.ResponseWriter, httpStatus int, code codes.Code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(httpStatus)
	_ = json.NewEncoder(w).Encode(map[string]any{"code": int(code), "message": msg, "details": []any{}})
}

// incomingHeaders passes on the one header the services read besides
// Authorization (which grpc-gateway always passes): the request id. Nothing
// reads the others, and copying every header into metadata costs each call.
func incomingHeaders(key string) (string, bool) {
	if strings.EqualFold(key, requestid.Header) {
		return "x-request-id", true
	}
	return "", false
}

// outgoingHeaders passes no gRPC header on: withRequestID already echoes
// the request id, the only one mandate sets.
func outgoingHeaders(string) (string, bool) { return "", false }

func errorHandler(ctx context.Context, mux *runtime.ServeMux, m runtime.Marshaler, w http.ResponseWriter, r *http.Request, err error) {
	st := status.Convert(err)
	if st.Code() == codes.InvalidArgument && strings.Contains(st.Message(), "request body too large") {
		writeError(w, http.StatusRequestEntityTooLarge, codes.InvalidArgument, "body: too large")
		return
	}
	// mandate's own errors carry details naming the field. An InvalidArgument
	// without them comes from decoding the body: say so.
	if st.Code() == codes.InvalidArgument && len(st.Details()) == 0 && !strings.HasPrefix(st.Message(), "body:") {
		msg := st.Message()
		if i := strings.Index(msg, "): "); i >= 0 {
			msg = msg[i+3:]
		}
		err = status.Error(codes.InvalidArgument, "body: "+msg)
	}
	if st.Code() == codes.FailedPrecondition && hasReason(st, engine.ReasonConflict) {
		// Someone else changed the object first (an access request already
		// answered): 409, as HTTP APIs say it, with the same body.
		w = conflictStatus{w}
	}
	runtime.DefaultHTTPErrorHandler(ctx, mux, m, bearerChallenge{w}, r, err)
}

func hasReason(st *status.Status, reason string) bool {
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetReason() == reason {
			return true
		}
	}
	return false
}

// conflictStatus answers 409 where grpc-gateway would answer FailedPrecondition's 400.
type conflictStatus struct{ http.ResponseWriter }

func (c conflictStatus) WriteHeader(code int) {
	if code == http.StatusBadRequest {
		code = http.StatusConflict
	}
	c.ResponseWriter.WriteHeader(code)
}

// bearerChallenge makes every 401 carry a proper Bearer challenge; grpc-gateway
// would otherwise put the status message in WWW-Authenticate.
type bearerChallenge struct{ http.ResponseWriter }

func (b bearerChallenge) WriteHeader(code int) {
	if code == http.StatusUnauthorized {
		b.Header().Set("WWW-Authenticate", `Bearer realm="mandate"`)
	}
	b.ResponseWriter.WriteHeader(code)
}

func routingErrorHandler(ctx context.Context, mux *runtime.ServeMux, m runtime.Marshaler, w http.ResponseWriter, r *http.Request, httpStatus int) {
	switch httpStatus {
	case http.StatusMethodNotAllowed:
		writeError(w, http.StatusMethodNotAllowed, codes.Unimplemented, fmt.Sprintf("method %s is not allowed on %s", r.Method, r.URL.Path))
	case http.StatusNotFound:
		writeError(w, http.StatusNotFound, codes.NotFound, fmt.Sprintf("no route for %s %s", r.Method, r.URL.Path))
	default:
		runtime.DefaultRoutingErrorHandler(ctx, mux, m, w, r, httpStatus)
	}
}
