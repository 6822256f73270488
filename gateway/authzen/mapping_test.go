package authzen

import (
	"testing"

	"github.com/mandate-dev/mandate/engine"
)

var idCases = []struct{ id, stored string }{
	{"alice", "alice"},
	{"101", "101"},
	{"agt_r7601h3m129vgt831zbj80ft14", "agt_r7601h3m129vgt831zbj80ft14"},
	{"CiRmZDA2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs", "CiRmZDA2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs"},
	{"rick@the-citadel.com", "rick|40the-citadel|2Ecom"},
	{"/todos/{todoId}", "/todos/|7BtodoId|7D"},
	{"a|b", "a|7Cb"},
	{"*", "|2A"},
	{"two words", "two|20words"},
	{"é", "|C3|A9"},
	{"", ""},
}

func TestEncodeID(t *testing.T) {
	for _, c := range idCases {
		if got := EncodeID(c.id); got != c.stored {
			t.Errorf("EncodeID(%q) = %q, want %q", c.id, got, c.stored)
		}
		if got, ok := DecodeID(c.stored); !ok || got != c.id {
			t.Errorf("DecodeID(%q) = %q, %v; want %q", c.stored, got, ok, c.id)
		}
	}
	// Ids EncodeID never produces have no AuthZEN id, so that every stored id
	// has at most one.
	for _, s := range []string{"a|", "a|4", "a|4g", "a|4a", "a|61", "a.b", "*"} {
		if got, ok := DecodeID(s); ok {
			t.Errorf("DecodeID(%q) = %q, want no id", s, got)
		}
	}
}

func FuzzEncodeID(f *testing.F) {
	for _, c := range idCases {
		f.Add(c.id)
	}
	f.Fuzz(func(t *testing.T, id string) {
		s := EncodeID(id)
		if back, ok := DecodeID(s); !ok || back != id {
			t.Fatalf("DecodeID(EncodeID(%q)) = %q, %v", id, back, ok)
		}
		if id != "" && len(s) <= 1024 {
			if _, err := engine.ParseRef("id", "record:"+s); err != nil {
				t.Fatalf("EncodeID(%q) = %q is not a SpiceDB id: %v", id, s, err)
			}
		}
	})
}

func FuzzDecodeID(f *testing.F) {
	for _, c := range idCases {
		f.Add(c.stored)
	}
	f.Add("a|4a")
	f.Fuzz(func(t *testing.T, s string) {
		if id, ok := DecodeID(s); ok && EncodeID(id) != s {
			t.Fatalf("DecodeID(%q) = %q, which encodes to %q", s, id, EncodeID(id))
		}
	})
}

func TestResourceType(t *testing.T) {
	for _, c := range []struct {
		in, out string
		ok      bool
	}{
		{"record", "record", true},
		{"user", "user_resource", true},
		{"agent", "agent_resource", true},
		{"user_resource", "", false},
		{"grant_resource", "", false},
		{"route_resource", "route_resource", true},
	} {
		if out, ok := ResourceType(c.in); out != c.out || ok != c.ok {
			t.Errorf("ResourceType(%q) = %q, %v; want %q, %v", c.in, out, ok, c.out, c.ok)
		}
	}
	if Permission("GET") != "get" || Permission("can_read_user") != "can_read_user" {
		t.Error("Permission is not the lower-case name")
	}
}
