package schema_test

import (
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/mandate-dev/mandate/schema"
)

// FuzzValidateCheckContext: a check's context, as the API decodes it, is
// either refused naming one of its keys or carries, for every parameter a
// condition reads, the JSON kind that parameter declares: a string is never
// taken for a number.
func FuzzValidateCheckContext(f *testing.F) {
	info, err := schema.Parse(schema.Default)
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{
		`{"risk_score":0.5}`, `{"risk_score":"0.1"}`, `{"risk_score":"-inf"}`, `{"risk_score":"1e-999"}`,
		`{"source_ip":"10.0.0.1"}`, `{"source_ip":["10.0.0.1"]}`, `{"environment":true}`, `{"other":{"x":[1,2]}}`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		var ctx structpb.Struct
		if err := protojson.Unmarshal([]byte(raw), &ctx); err != nil {
			return
		}
		key, err := info.ValidateCheckContext(ctx.GetFields())
		if err != nil {
			if _, ok := ctx.GetFields()[key]; !ok {
				t.Fatalf("%s: refused naming %q, not one of its keys: %v", raw, key, err)
			}
			return
		}
		if v, ok := ctx.GetFields()["risk_score"]; ok {
			if _, num := v.GetKind().(*structpb.Value_NumberValue); !num {
				t.Fatalf("%s: risk_score accepted as %T", raw, v.GetKind())
			}
		}
		for _, k := range []string{"source_ip", "environment"} {
			if v, ok := ctx.GetFields()[k]; ok {
				if _, str := v.GetKind().(*structpb.Value_StringValue); !str {
					t.Fatalf("%s: %s accepted as %T", raw, k, v.GetKind())
				}
			}
		}
	})
}
