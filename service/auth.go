package service

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/mandate-dev/mandate/credential"
	"github.com/mandate-dev/mandate/engine"
)

// Role is what a key may do.
type Role string

// Roles. Each key has exactly one.
const (
	RoleChecker  Role = "checker"  // Check only
	RoleOperator Role = "operator" // tasks, agents and grants, for agent runtimes
	RoleReviewer Role = "reviewer" // read only
	RoleAdmin    Role = "admin"    // everything
	// RoleGateway is exactly what an enforcement point in front of many
	// tools (the MCP gateway) calls: Check and CheckBulk for every request,
	// ListAgentAccess to show an agent only the tools its live grants reach,
	// and Explain to say what would change a deny. Nothing else: no writes,
	// no audit trail, no search.
	RoleGateway Role = "gateway"
)

// RoleHuman is no key's role: it is the caller of a method that accepts a
// human's own OIDC token in place of a key (see AcceptHumanTokens).
const RoleHuman Role = "human"

// Roles lists every role a key may have.
var Roles = []Role{RoleChecker, RoleOperator, RoleReviewer, RoleAdmin, RoleGateway}

// Key is a caller's credential, stored as the SHA-256 of the key.
type Key struct {
	Name   string `yaml:"name"`
	Role   Role   `yaml:"role"`
	SHA256 string `yaml:"sha256"`
	// CountsForBounds marks a caller trusted to report what agents do: a
	// gateway or resource service you run. Only its checks by bare subject
	// count against an agent's behavioural bounds, so no other key holder
	// can push an agent over a bound with checks of its own.
	CountsForBounds bool `yaml:"counts_for_bounds"`
	// SPIFFEID or DNSName, instead of SHA256, authenticate a caller by its
	// client certificate (with --client-ca): an X.509-SVID with this SPIFFE
	// ID, or a certificate with this DNS name.
	SPIFFEID string `yaml:"spiffe_id"`
	DNSName  string `yaml:"dns_name"`
}

// Keys is the set of accepted keys. It is immutable once built.
type Keys struct {
	byHash map[[32]byte]Key
	// byIdentity maps certificate identities ("spiffe:…", "dns:…") to keys.
	byIdentity map[string]Key
	// failures, when set, counts and logs refused calls. Set before serving.
	failures *AuthFailures
	// humans, when set, verifies a human's own OIDC token presented in place
	// of a key, for the methods RoleHuman may call. Set before serving.
	humans HumanVerifier
}

// HumanVerifier verifies a human's OIDC ID token or JWT access token and
// returns the user it names ("user:<id>").
type HumanVerifier func(ctx context.Context, raw string) (string, error)

// AcceptHumanTokens lets a human call the methods open to RoleHuman with
// their own OIDC token in place of a key (Authorization: Bearer <token>).
// The call then runs as a key named after the user ("user:<id>") with
// RoleHuman. Call it before serving.
func (k *Keys) AcceptHumanTokens(v HumanVerifier) { k.humans = v }

type keysFile struct {
	Keys []Key `yaml:"keys"`
}

// LoadKeys reads a keys file:
//
//	keys:
//	  - {name: ci-runner, role: checker, sha256: <hex of the key>}
//	  - {name: api-gateway, role: checker, sha256: <hex>, counts_for_bounds: true}
func LoadKeys(path string) (*Keys, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--keys-file %s: %w", path, err)
	}
	k, err := ParseKeys(b)
	if err != nil {
		return nil, fmt.Errorf("--keys-file %s: %w", path, err)
	}
	return k, nil
}

// ParseKeys parses the contents of a keys file. Unknown fields are errors.
func ParseKeys(b []byte) (*Keys, error) {
	var f keysFile
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		return nil, err
	}
	return NewKeys(f.Keys)
}

// NewKeys validates keys and indexes them.
func NewKeys(keys []Key) (*Keys, error) {
	if len(keys) == 0 {
		return nil, fmt.Errorf("keys: no keys defined")
	}
	k := &Keys{byHash: map[[32]byte]Key{}, byIdentity: map[string]Key{}}
	names := map[string]bool{}
	for i, key := range keys {
		if key.Name == "" {
			return nil, fmt.Errorf("keys[%d]: name is required", i)
		}
		if names[key.Name] {
			return nil, fmt.Errorf("keys[%d]: duplicate name %q", i, key.Name)
		}
		names[key.Name] = true
		if !validRole(key.Role) {
			return nil, fmt.Errorf("keys[%d] (%s): role %q is not one of %v", i, key.Name, key.Role, Roles)
		}
		if hasCertIdentity(key) {
			if key.SHA256 != "" {
				return nil, fmt.Errorf("keys[%d] (%s): a certificate identity needs no sha256; set one or the other", i, key.Name)
			}
			if err := validateCertIdentity(key); err != nil {
				return nil, fmt.Errorf("keys[%d] (%s): %w", i, key.Name, err)
			}
			if _, dup := k.byIdentity[certIdentityOf(key)]; dup {
				return nil, fmt.Errorf("keys[%d] (%s): the same certificate identity is listed twice", i, key.Name)
			}
			k.byIdentity[certIdentityOf(key)] = key
			continue
		}
		raw, err := hex.DecodeString(strings.ToLower(key.SHA256))
		if err != nil || len(raw) != sha256.Size {
			return nil, fmt.Errorf("keys[%d] (%s): sha256 must be 64 hex characters", i, key.Name)
		}
		var h [32]byte
		copy(h[:], raw)
		if _, dup := k.byHash[h]; dup {
			return nil, fmt.Errorf("keys[%d] (%s): the same key is listed twice", i, key.Name)
		}
		k.byHash[h] = key
	}
	return k, nil
}

func validRole(r Role) bool {
	for _, x := range Roles {
		if r == x {
			return true
		}
	}
	return false
}

// DevKeys generates one random key per role, for development mode. It returns
// the keys and their plaintext, by role.
func DevKeys() (*Keys, map[Role]string) {
	plain := map[Role]string{}
	var keys []Key
	for _, r := range Roles {
		b := make([]byte, 24)
		if _, err := rand.Read(b); err != nil {
			panic(err)
		}
		p := "mk_" + string(r) + "_" + hex.EncodeToString(b)
		plain[r] = p
		sum := sha256.Sum256([]byte(p))
		// Development keys are all trusted, so bounds can be tried out.
		keys = append(keys, Key{Name: "dev-" + string(r), Role: r, SHA256: hex.EncodeToString(sum[:]), CountsForBounds: true})
	}
	k, err := NewKeys(keys)
	if err != nil {
		panic(err)
	}
	return k, plain
}

// Lookup finds the key for a presented secret.
func (k *Keys) Lookup(secret string) (Key, bool) {
	// Only hashes are compared, so the lookup's timing reveals nothing about
	// a key: finding a secret from its SHA-256 is the preimage problem.
	key, ok := k.byHash[sha256.Sum256([]byte(secret))]
	return key, ok
}

// methodRoles says which roles may call each method. A method missing here is
// refused: new RPCs are closed until someone decides who may call them.
var methodRoles = map[string][]Role{
	"/mandate.v1.CheckService/Check":                     {RoleChecker, RoleGateway, RoleAdmin},
	"/mandate.v1.CheckService/CheckBulk":                 {RoleChecker, RoleGateway, RoleAdmin},
	"/mandate.v1.TaskService/CreateTask":                 {RoleOperator, RoleAdmin},
	"/mandate.v1.TaskService/CompleteTask":               {RoleOperator, RoleAdmin},
	"/mandate.v1.TaskService/GetTask":                    {RoleOperator, RoleReviewer, RoleAdmin},
	"/mandate.v1.AgentService/CreateAgent":               {RoleOperator, RoleAdmin},
	"/mandate.v1.AgentService/RevokeAgent":               {RoleOperator, RoleAdmin},
	"/mandate.v1.AgentService/SuspendAgent":              {RoleOperator, RoleAdmin},
	"/mandate.v1.AgentService/ResumeAgent":               {RoleOperator, RoleAdmin},
	"/mandate.v1.AgentService/GetAgent":                  {RoleOperator, RoleReviewer, RoleAdmin},
	"/mandate.v1.AgentService/SuspendPrincipalAgents":    {RoleOperator, RoleAdmin},
	"/mandate.v1.AgentService/ResumePrincipalAgents":     {RoleOperator, RoleAdmin},
	"/mandate.v1.AgentService/FreezeAllAgents":           {RoleAdmin},
	"/mandate.v1.AgentService/UnfreezeAllAgents":         {RoleAdmin},
	"/mandate.v1.GrantService/CreateGrant":               {RoleOperator, RoleAdmin},
	"/mandate.v1.GrantService/DeleteGrant":               {RoleOperator, RoleAdmin},
	"/mandate.v1.GrantService/GetGrant":                  {RoleOperator, RoleReviewer, RoleAdmin},
	"/mandate.v1.SchemaService/ReadSchema":               {RoleReviewer, RoleAdmin},
	"/mandate.v1.SchemaService/WriteSchema":              {RoleAdmin},
	"/mandate.v1.RelationshipService/ReadRelationships":  {RoleReviewer, RoleAdmin},
	"/mandate.v1.RelationshipService/WriteRelationships": {RoleAdmin},
	"/mandate.v1.AuditService/ListAudit":                 {RoleReviewer, RoleAdmin},
	"/mandate.v1.ReviewService/ListAgents":               {RoleReviewer, RoleAdmin},
	"/mandate.v1.ReviewService/ListAgentAccess":          {RoleReviewer, RoleGateway, RoleAdmin},
	"/mandate.v1.ReviewService/ListPrincipalAgents":      {RoleReviewer, RoleAdmin},
	"/mandate.v1.ReviewService/Explain":                  {RoleReviewer, RoleGateway, RoleAdmin},
	"/mandate.v1.ReviewService/ListUnusedGrants":         {RoleReviewer, RoleAdmin},
	"/mandate.v1.ReviewService/GetReviewReport":          {RoleReviewer, RoleAdmin},
	"/mandate.v1.ReviewService/GetReviewReportCSV":       {RoleReviewer, RoleAdmin},
	"/mandate.v1.SearchService/LookupSubjects":           {RoleReviewer, RoleAdmin},
	"/mandate.v1.SearchService/LookupResources":          {RoleReviewer, RoleAdmin},
	"/mandate.v1.SearchService/LookupActions":            {RoleReviewer, RoleAdmin},
	// Access requests: an agent runtime (operator) files one; the human
	// answers with their own OIDC token (RoleHuman), or an admin does. An
	// operator answers only while no OIDC issuer is configured, which the
	// handler enforces; the key that filed a request never answers it.
	"/mandate.v1.AccessRequestService/CreateAccessRequest":  {RoleOperator, RoleAdmin},
	"/mandate.v1.AccessRequestService/GetAccessRequest":     {RoleOperator, RoleReviewer, RoleAdmin, RoleHuman},
	"/mandate.v1.AccessRequestService/ListAccessRequests":   {RoleOperator, RoleReviewer, RoleAdmin, RoleHuman},
	"/mandate.v1.AccessRequestService/ApproveAccessRequest": {RoleOperator, RoleAdmin, RoleHuman},
	"/mandate.v1.AccessRequestService/DeclineAccessRequest": {RoleOperator, RoleAdmin, RoleHuman},
}

// unauthenticatedPrefixes are methods anyone may call.
var unauthenticatedPrefixes = []string{"/grpc.health.v1.Health/"}

type keyCtx struct{}

// CallerFrom returns the key that authenticated the call.
func CallerFrom(ctx context.Context) (Key, bool) {
	k, ok := ctx.Value(keyCtx{}).(Key)
	return k, ok
}

func (k *Keys) authorize(ctx context.Context, method string) (context.Context, error) {
	for _, p := range unauthenticatedPrefixes {
		if strings.HasPrefix(method, p) {
			return ctx, nil
		}
	}
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("authorization")
	var key Key
	if leaf := verifiedLeaf(ctx); len(vals) == 0 && leaf != nil {
		// No key sent: the client certificate, verified by TLS, is the credential.
		var ok bool
		if key, ok = k.certKey(leaf); !ok {
			return nil, unauthenticated("the client certificate maps to no entry of the keys file")
		}
	} else {
		if len(vals) != 1 {
			return nil, unauthenticated("missing authorization: send `authorization: Bearer <key>`")
		}
		scheme, secret, ok := strings.Cut(vals[0], " ")
		if !ok || !strings.EqualFold(scheme, "bearer") || secret == "" {
			return nil, unauthenticated("malformed authorization: send `authorization: Bearer <key>`")
		}
		if key, ok = k.Lookup(strings.TrimSpace(secret)); !ok {
			human, err := k.human(ctx, method, strings.TrimSpace(secret))
			if err != nil {
				return nil, err
			}
			key = human
		}
	}
	roles, known := methodRoles[method]
	if !known {
		return nil, forbidden("method %s is not open to any role", method)
	}
	for _, r := range roles {
		if r == key.Role {
			return context.WithValue(ctx, keyCtx{}, key), nil
		}
	}
	return nil, forbidden("key %q has role %s; %s needs one of %v", key.Name, key.Role, method, roles)
}

// human authenticates a human's own OIDC token for a method open to
// RoleHuman; anything else that is not a known key is an unknown key.
func (k *Keys) human(ctx context.Context, method, secret string) (Key, error) {
	if k.humans == nil || !slices.Contains(methodRoles[method], RoleHuman) || strings.Count(secret, ".") != 2 {
		return Key{}, unauthenticated("unknown key")
	}
	user, err := k.humans(ctx, secret)
	if errors.Is(err, credential.ErrIssuerUnavailable) {
		return Key{}, &engine.Error{Kind: engine.KindUnavailable, Msg: "the OIDC issuer of the token could not be reached", Err: errors.Join(engine.ErrUnavailable, err)}
	}
	if err != nil {
		return Key{}, unauthenticated("unknown key, and not a valid OIDC token of a human: " + err.Error())
	}
	return Key{Name: user, Role: RoleHuman}, nil
}

// AuthorizeHeader checks an Authorization header value against method's
// roles exactly as the interceptors do, for HTTP handlers that must refuse a
// caller before doing any work of their own (the AuthZEN endpoints).
func (k *Keys) AuthorizeHeader(ctx context.Context, authorization, method string) error {
	md := metadata.MD{}
	if authorization != "" {
		md.Set("authorization", authorization)
	}
	_, err := k.authorizeObserved(metadata.NewIncomingContext(ctx, md), method)
	return toStatus(ctx, nil, err)
}

// UnaryInterceptor authenticates and authorizes every unary call.
func (k *Keys) UnaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	authed, err := k.authorizeObserved(ctx, info.FullMethod)
	if err != nil {
		return nil, toStatus(ctx, nil, err)
	}
	return handler(authed, req)
}

// StreamInterceptor authenticates and authorizes every streaming call.
func (k *Keys) StreamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if _, err := k.authorizeObserved(ss.Context(), info.FullMethod); err != nil {
		return toStatus(ss.Context(), nil, err)
	}
	return handler(srv, ss)
}

// MethodRoles returns the roles that may call each gRPC method, a copy of the
// one table the interceptors enforce, for documentation and tests.
func MethodRoles() map[string][]Role {
	out := make(map[string][]Role, len(methodRoles))
	for m, rs := range methodRoles {
		out[m] = append([]Role(nil), rs...)
	}
	return out
}
