// Package schema holds mandate's default SpiceDB schema and the checks that
// keep any admin-written schema compatible with mandate: the core definitions
// stay as they are, and every resource type can receive agent grants.
package schema

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/authzed/spicedb/pkg/caveats"
	caveattypes "github.com/authzed/spicedb/pkg/caveats/types"
	core "github.com/authzed/spicedb/pkg/proto/core/v1"
	"github.com/authzed/spicedb/pkg/schemadsl/compiler"
	"github.com/authzed/spicedb/pkg/schemadsl/generator"
	"github.com/authzed/spicedb/pkg/schemadsl/input"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/structpb"
)

// Default is the schema mandate writes when SpiceDB has none.
//
//go:embed default.zed
var Default string

// Core object types. mandate owns their relationships.
const (
	TypeUser  = "user"
	TypeTask  = "task"
	TypeAgent = "agent"
	TypeGrant = "grant"
	// TypeMandate holds the global switches; its one object is mandate:global.
	TypeMandate = "mandate"
	// TypeAccessRequest is an agent's request for a grant, answered by its human.
	TypeAccessRequest = "access_request"
)

// Caveats the core definitions use.
const (
	CaveatWithinLifetime = "within_lifetime"
	CaveatGrantLifetime  = "grant_lifetime"
	CaveatRecord         = "mandate_record"
	// CaveatRequest and CaveatAnswer carry an access request and its answer.
	CaveatRequest = "mandate_request"
	CaveatAnswer  = "mandate_answer"
)

// Grant conditions: caveats a grant may carry instead of grant_lifetime.
const (
	ConditionSourceNetwork = "grant_source_network"
	ConditionHours         = "grant_hours"
	ConditionMaxRisk       = "grant_max_risk"
	ConditionEnvironment   = "grant_environment"
)

// Conditions lists every grant condition, sorted.
var Conditions = []string{ConditionEnvironment, ConditionHours, ConditionMaxRisk, ConditionSourceNetwork}

// IsCoreCaveat reports whether c is one of mandate's own caveats.
func IsCoreCaveat(c string) bool {
	return c == CaveatWithinLifetime || c == CaveatGrantLifetime || c == CaveatRecord || c == CaveatRequest || c == CaveatAnswer || IsCondition(c)
}

// IsCondition reports whether c names a grant condition.
func IsCondition(c string) bool {
	for _, x := range Conditions {
		if x == c {
			return true
		}
	}
	return false
}

// GrantSuffix names the relation that holds agent grants of a permission:
// permission P is granted through relation P + GrantSuffix.
const GrantSuffix = "_grant"

// GrantRelationTypes is the type expression every <permission>_grant relation must have.
const GrantRelationTypes = "agent with grant_lifetime | task#member with grant_lifetime"

// Error is a schema that mandate refuses. Type names the offending definition.
type Error struct {
	Type string
	Msg  string
}

func (e *Error) Error() string {
	if e.Type == "" {
		return e.Msg
	}
	return fmt.Sprintf("definition %s: %s", e.Type, e.Msg)
}

// Info is what mandate needs to know about a schema on the decision path.
// It is immutable once built.
type Info struct {
	source string
	types  map[string]*TypeInfo
	// caveats maps each caveat to its parameters' types.
	caveats map[string]map[string]*core.CaveatTypeReference
	// params maps each parameter name to the caveats that declare it.
	params map[string][]caveatParam
}

type caveatParam struct {
	caveat string
	t      *core.CaveatTypeReference
}

// ValidateCaveatContext checks values stored with a relationship's caveat:
// the caveat exists, and every key is one of its parameters, of its type.
func (i *Info) ValidateCaveatContext(name string, ctx map[string]any) error {
	params, ok := i.caveats[name]
	if !ok {
		return fmt.Errorf("the schema has no caveat %q", name)
	}
	if _, err := caveats.ConvertContextToParameters(caveattypes.Default.TypeSet, ctx, params, caveats.ErrorForUnknownParameters); err != nil {
		return fmt.Errorf("caveat %s: %w", name, err)
	}
	return nil
}

// ValidateCheckContext checks a check's context against every caveat of the
// schema: a key that a caveat reads must have that parameter's type. Keys no
// caveat reads are left alone. It returns the first bad key, in key order.
func (i *Info) ValidateCheckContext(ctx map[string]*structpb.Value) (string, error) {
	var keys []string
	for k := range ctx {
		if len(i.params[k]) > 0 {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := map[string]any{k: ctx[k].AsInterface()}
		for _, p := range i.params[k] {
			// SpiceDB converts "0.1", "-inf" or "1e-999" into a double; a
			// caller must send the JSON kind the parameter declares.
			if err := strictKind(ctx[k], p.t); err != nil {
				return k, fmt.Errorf("caveat %s reads it as %s: %w", p.caveat, caveats.ParameterTypeString(p.t), err)
			}
			if _, err := caveats.ConvertContextToParameters(caveattypes.Default.TypeSet, v, map[string]*core.CaveatTypeReference{k: p.t}, caveats.SkipUnknownParameters); err != nil {
				return k, fmt.Errorf("caveat %s reads it as %s: %w", p.caveat, caveats.ParameterTypeString(p.t), errors.Unwrap(err))
			}
		}
	}
	return "", nil
}

// strictKind reports an error unless v has the JSON kind a caveat parameter
// of type t needs: a number for int, uint and double (an integer for int and
// uint), true or false for bool, a list or an object for list and map (their
// elements checked the same way), and a string for the rest.
func strictKind(v *structpb.Value, t *core.CaveatTypeReference) error {
	switch t.GetTypeName() {
	case "any":
		return nil
	case "int", "uint", "double":
		n, ok := v.GetKind().(*structpb.Value_NumberValue)
		if !ok {
			return fmt.Errorf("expected a JSON number")
		}
		if t.GetTypeName() != "double" && n.NumberValue != math.Trunc(n.NumberValue) {
			return fmt.Errorf("expected an integer")
		}
		return nil
	case "bool":
		if _, ok := v.GetKind().(*structpb.Value_BoolValue); !ok {
			return fmt.Errorf("expected true or false")
		}
		return nil
	case "list":
		l, ok := v.GetKind().(*structpb.Value_ListValue)
		if !ok {
			return fmt.Errorf("expected a JSON list")
		}
		for _, e := range l.ListValue.GetValues() {
			if len(t.GetChildTypes()) == 1 {
				if err := strictKind(e, t.GetChildTypes()[0]); err != nil {
					return fmt.Errorf("list element: %w", err)
				}
			}
		}
		return nil
	case "map":
		m, ok := v.GetKind().(*structpb.Value_StructValue)
		if !ok {
			return fmt.Errorf("expected a JSON object")
		}
		for _, e := range m.StructValue.GetFields() {
			if len(t.GetChildTypes()) == 1 {
				if err := strictKind(e, t.GetChildTypes()[0]); err != nil {
					return fmt.Errorf("map value: %w", err)
				}
			}
		}
		return nil
	}
	if _, ok := v.GetKind().(*structpb.Value_StringValue); !ok {
		return fmt.Errorf("expected a JSON string")
	}
	return nil
}

// TypeInfo describes one object definition.
type TypeInfo struct {
	Name        string
	relations   map[string]bool
	permissions map[string]bool
	// conditions lists, per grant relation, the conditions it accepts for
	// agents ("agent") and for tasks ("task").
	conditions map[string]map[string][]string
}

// Source returns the schema text.
func (i *Info) Source() string { return i.source }

// HasType reports whether the schema defines the type.
func (i *Info) HasType(t string) bool { _, ok := i.types[t]; return ok }

// ReservedAgentToken is a type name no schema may define: AuthZEN's subject
// type "agent_token" carries an agent's mandate token, never an id.
const ReservedAgentToken = "agent_token"

// IsCore reports whether t is one of mandate's own types.
func IsCore(t string) bool {
	switch t {
	case TypeUser, TypeTask, TypeAgent, TypeGrant, TypeMandate, TypeAccessRequest:
		return true
	}
	return false
}

// HasPermission reports whether t defines permission p.
func (i *Info) HasPermission(t, p string) bool {
	ti, ok := i.types[t]
	return ok && ti.permissions[p]
}

// HasRelation reports whether t defines relation r (not a permission).
func (i *Info) HasRelation(t, r string) bool {
	ti, ok := i.types[t]
	return ok && ti.relations[r]
}

// Grantable reports whether agents can be granted permission p on type t.
func (i *Info) Grantable(t, p string) bool {
	return !IsCore(t) && i.HasPermission(t, p) && i.HasRelation(t, p+GrantSuffix)
}

// GrantConditions lists the conditions a grant of permission p on type t may
// carry when held by holderType ("agent" or "task").
func (i *Info) GrantConditions(t, p, holderType string) []string {
	ti, ok := i.types[t]
	if !ok {
		return nil
	}
	return ti.conditions[p+GrantSuffix][holderType]
}

// ResourceTypes lists the non-core types, sorted.
func (i *Info) ResourceTypes() []string {
	out := make([]string, 0, len(i.types))
	for t := range i.types {
		if !IsCore(t) {
			out = append(out, t)
		}
	}
	sort.Strings(out)
	return out
}

// Permissions lists the permissions of t, sorted.
func (i *Info) Permissions(t string) []string {
	ti, ok := i.types[t]
	if !ok {
		return nil
	}
	out := make([]string, 0, len(ti.permissions))
	for p := range ti.permissions {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

var defaultCompiled = mustCompile(Default)

func mustCompile(src string) *compiler.CompiledSchema {
	cs, err := compile(src)
	if err != nil {
		panic(fmt.Sprintf("default schema does not compile: %v", err))
	}
	return cs
}

func compile(src string) (*compiler.CompiledSchema, error) {
	return compiler.Compile(
		compiler.InputSchema{Source: input.Source("schema"), SchemaString: src},
		compiler.AllowUnprefixedObjectType(),
		compiler.DisallowImportFlag(),
	)
}

// Parse compiles a schema and checks mandate's conventions. SpiceDB validates
// the rest when the schema is written.
func Parse(src string) (*Info, error) {
	if strings.TrimSpace(src) == "" {
		return nil, &Error{Msg: "schema is empty"}
	}
	cs, err := compile(src)
	if err != nil {
		return nil, &Error{Msg: err.Error()}
	}

	defs := map[string]*core.NamespaceDefinition{}
	for _, d := range cs.ObjectDefinitions {
		defs[d.GetName()] = d
	}
	caveatDefs := map[string]*core.CaveatDefinition{}
	for _, c := range cs.CaveatDefinitions {
		caveatDefs[c.GetName()] = c
	}

	// The core must be present and unchanged.
	for _, want := range defaultCompiled.CaveatDefinitions {
		got, ok := caveatDefs[want.GetName()]
		if !ok {
			return nil, &Error{Msg: fmt.Sprintf("caveat %s is part of mandate's core and cannot be removed", want.GetName())}
		}
		if !proto.Equal(normalized(got), normalized(want)) {
			return nil, &Error{Msg: fmt.Sprintf("caveat %s is part of mandate's core and cannot be changed", want.GetName())}
		}
	}
	for _, want := range defaultCompiled.ObjectDefinitions {
		if !IsCore(want.GetName()) {
			continue
		}
		got, ok := defs[want.GetName()]
		if !ok {
			return nil, &Error{Type: want.GetName(), Msg: "is part of mandate's core and cannot be removed"}
		}
		if !proto.Equal(normalized(got), normalized(want)) {
			return nil, &Error{Type: want.GetName(), Msg: "is part of mandate's core and cannot be changed"}
		}
	}

	info := &Info{source: src, types: map[string]*TypeInfo{}, caveats: map[string]map[string]*core.CaveatTypeReference{}}
	info.params = map[string][]caveatParam{}
	for name, c := range caveatDefs {
		info.caveats[name] = c.GetParameterTypes()
		for p, t := range c.GetParameterTypes() {
			info.params[p] = append(info.params[p], caveatParam{caveat: name, t: t})
		}
	}
	for _, d := range cs.ObjectDefinitions {
		ti := &TypeInfo{Name: d.GetName(), relations: map[string]bool{}, permissions: map[string]bool{}, conditions: map[string]map[string][]string{}}
		for _, r := range d.GetRelation() {
			if r.GetUsersetRewrite() != nil {
				ti.permissions[r.GetName()] = true
			} else {
				ti.relations[r.GetName()] = true
			}
		}
		info.types[d.GetName()] = ti
		if d.GetName() == ReservedAgentToken {
			return nil, &Error{Type: d.GetName(), Msg: "the name is reserved: AuthZEN's subject type agent_token carries an agent's token"}
		}
		if IsCore(d.GetName()) {
			continue
		}
		if err := checkGrantConvention(d, ti); err != nil {
			return nil, err
		}
	}
	return info, nil
}

// checkGrantConvention requires, for every permission P of a resource type,
// a relation P_grant typed GrantRelationTypes, optionally followed by grant
// conditions. It records the conditions each grant relation accepts in ti.
func checkGrantConvention(d *core.NamespaceDefinition, ti *TypeInfo) error {
	rels := map[string]*core.Relation{}
	for _, r := range d.GetRelation() {
		rels[r.GetName()] = r
	}
	for _, r := range d.GetRelation() {
		if r.GetUsersetRewrite() == nil {
			continue
		}
		gname := r.GetName() + GrantSuffix
		g, ok := rels[gname]
		if !ok || g.GetUsersetRewrite() != nil {
			return &Error{Type: d.GetName(), Msg: fmt.Sprintf(
				"permission %s cannot receive agent grants: add `relation %s: %s`", r.GetName(), gname, GrantRelationTypes)}
		}
		conds, ok := grantRelation(g)
		if !ok {
			return &Error{Type: d.GetName(), Msg: fmt.Sprintf(
				"relation %s must be `%s`, optionally followed by grant conditions such as `| agent with %s | task#member with %s`",
				gname, GrantRelationTypes, ConditionSourceNetwork, ConditionSourceNetwork)}
		}
		ti.conditions[gname] = conds
	}
	return nil
}

// grantRelation checks a P_grant relation: both holder types with
// grant_lifetime, and nothing else but grant conditions on those two holder
// types. It returns the conditions per holder type ("agent", "task").
func grantRelation(r *core.Relation) (map[string][]string, bool) {
	holders := map[string]string{TypeAgent + "#...": TypeAgent, TypeTask + "#member": TypeTask}
	conds := map[string][]string{}
	plain := map[string]bool{}
	for _, a := range r.GetTypeInformation().GetAllowedDirectRelations() {
		holder, ok := holders[a.GetNamespace()+"#"+a.GetRelation()]
		if !ok || a.GetRequiredExpiration() != nil || a.GetPublicWildcard() != nil {
			return nil, false
		}
		switch c := a.GetRequiredCaveat().GetCaveatName(); {
		case c == CaveatGrantLifetime:
			plain[holder] = true
		case IsCondition(c):
			conds[holder] = append(conds[holder], c)
		default:
			return nil, false
		}
	}
	if !plain[TypeAgent] || !plain[TypeTask] {
		return nil, false
	}
	for _, cs := range conds {
		sort.Strings(cs)
	}
	return conds, true
}

// normalized returns a copy of m without source positions and doc comments,
// so that two definitions compare equal when they mean the same thing.
func normalized(m proto.Message) proto.Message {
	c := proto.Clone(m)
	clearPositions(c.ProtoReflect())
	return c
}

func clearPositions(m protoreflect.Message) {
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch fd.Name() {
		case "source_position", "metadata":
			m.Clear(fd)
			return true
		}
		switch {
		case fd.IsList() && fd.Message() != nil:
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				clearPositions(l.Get(i).Message())
			}
		case fd.IsMap() && fd.MapValue().Message() != nil:
			v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
				clearPositions(mv.Message())
				return true
			})
		case fd.Message() != nil && !fd.IsList() && !fd.IsMap():
			clearPositions(v.Message())
		}
		return true
	})
}

// Upgrade brings a schema written for an earlier mandate up to this
// version's core: every core definition and caveat is replaced by, or
// gains, the current one, and everything else is kept as it is. It reports
// whether anything changed. It only adds to the core (relations, caveats,
// the mandate definition), so existing relationships stay valid.
func Upgrade(src string) (string, bool, error) {
	if _, err := Parse(src); err == nil {
		return src, false, nil
	}
	cs, err := compile(src)
	if err != nil {
		return "", false, &Error{Msg: err.Error()}
	}
	wantDefs := map[string]*core.NamespaceDefinition{}
	for _, d := range defaultCompiled.ObjectDefinitions {
		if IsCore(d.GetName()) {
			wantDefs[d.GetName()] = d
		}
	}
	wantCaveats := map[string]*core.CaveatDefinition{}
	for _, c := range defaultCompiled.CaveatDefinitions {
		wantCaveats[c.GetName()] = c
	}
	var out []compiler.SchemaDefinition
	// The core first, in the default's order, then everything else in its own.
	for _, c := range defaultCompiled.CaveatDefinitions {
		out = append(out, c)
	}
	for _, d := range defaultCompiled.ObjectDefinitions {
		if IsCore(d.GetName()) {
			out = append(out, d)
		}
	}
	for _, c := range cs.CaveatDefinitions {
		if wantCaveats[c.GetName()] == nil {
			out = append(out, c)
		}
	}
	for _, d := range cs.ObjectDefinitions {
		if wantDefs[d.GetName()] == nil {
			out = append(out, d)
		}
	}
	text, _, err := generator.GenerateSchema(context.Background(), out)
	if err != nil {
		return "", false, fmt.Errorf("writing the upgraded schema: %w", err)
	}
	if _, err := Parse(text); err != nil {
		return "", false, fmt.Errorf("the schema cannot be upgraded to this mandate's core: %w", err)
	}
	return text, true, nil
}
