package requestid

import (
	"context"
	"strings"
	"testing"
)

func TestAccept(t *testing.T) {
	if got := Accept("deploy-42"); got != "deploy-42" {
		t.Fatalf("a caller's id: %q", got)
	}
	for _, bad := range []string{"", strings.Repeat("x", maxLen+1), "a b", "tab\there", "é", "nul\x00"} {
		if got := Accept(bad); !strings.HasPrefix(got, "req_") || len(got) != 4+24 {
			t.Fatalf("Accept(%d bytes) = %q, want a new id", len(bad), got)
		}
	}
	if New() == New() {
		t.Fatal("two new ids are equal")
	}
	if got := FromContext(NewContext(context.Background(), "r1")); got != "r1" {
		t.Fatalf("FromContext = %q", got)
	}
	if got := FromContext(context.Background()); got != "" {
		t.Fatalf("FromContext of a bare context = %q", got)
	}
}
