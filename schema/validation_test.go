package schema_test

import (
	"os"
	"testing"
	"testing/fstest"

	"github.com/authzed/spicedb/pkg/development"
	devinterface "github.com/authzed/spicedb/pkg/proto/developer/v1"
	"github.com/authzed/spicedb/pkg/validationfile"

	"github.com/mandate-dev/mandate/schema"
)

// validationFile is the SpiceDB validation file for default.zed. `zed validate`
// reads it as is; this test runs it with SpiceDB's own development tooling.
const validationFile = "default.validation.yaml"

// TestDefaultSchemaValidationFile loads default.validation.yaml and runs every
// assertion and expected-relations block in it against the default schema.
func TestDefaultSchemaValidationFile(t *testing.T) {
	raw, err := os.ReadFile(validationFile)
	if err != nil {
		t.Fatal(err)
	}
	vf, err := validationfile.DecodeValidationFile(raw)
	if err != nil {
		t.Fatalf("%s: %v", validationFile, err)
	}

	// The file must point at default.zed rather than carry a copy of it, and
	// the test resolves that reference to the schema mandate embeds.
	if vf.Schema.Schema != "" {
		t.Fatalf("%s: embeds a schema; use `schemaFile: default.zed`", validationFile)
	}
	if vf.SchemaFile != "default.zed" {
		t.Fatalf("%s: schemaFile is %q, want %q", validationFile, vf.SchemaFile, "default.zed")
	}
	fsys := fstest.MapFS{vf.SchemaFile: {Data: []byte(schema.Default)}}

	yctx, devErrs, err := development.NewDevContextForValidationFile(t.Context(), vf,
		development.WithSourceFS(fsys), development.WithDisableImports())
	if err != nil {
		t.Fatalf("%s: %v", validationFile, err)
	}
	if devErrs != nil {
		reportDevErrors(t, "loading", devErrs.GetInputErrors())
		t.FailNow()
	}
	defer yctx.DevContext.Dispose()

	// Guard against a file that silently lost its assertions.
	a := yctx.Assertions
	if len(a.AssertTrue) == 0 || len(a.AssertFalse) == 0 {
		t.Fatalf("%s: has %d assertTrue and %d assertFalse assertions; want both non-empty",
			validationFile, len(a.AssertTrue), len(a.AssertFalse))
	}
	if len(vf.Relationships.Relationships) == 0 {
		t.Fatalf("%s: has no relationships", validationFile)
	}

	failures, err := development.RunAllAssertions(yctx.DevContext, &a)
	if err != nil {
		t.Fatalf("running assertions: %v", err)
	}
	reportDevErrors(t, "assertion", failures)

	_, failures, err = development.RunValidation(yctx.DevContext, &yctx.ExpectedRelations)
	if err != nil {
		t.Fatalf("running validation: %v", err)
	}
	reportDevErrors(t, "validation", failures)

	t.Logf("%s: %d relationships, %d assertTrue, %d assertCaveated, %d assertFalse, %d validation entries",
		validationFile, len(vf.Relationships.Relationships), len(a.AssertTrue), len(a.AssertCaveated),
		len(a.AssertFalse), len(yctx.ExpectedRelations.ValidationMap))
}

func reportDevErrors(t *testing.T, what string, errs []*devinterface.DeveloperError) {
	t.Helper()
	for _, e := range errs {
		t.Errorf("%s:%d:%d: %s failed: %s (%s)", validationFile, e.GetLine(), e.GetColumn(), what, e.GetMessage(), e.GetContext())
	}
}
