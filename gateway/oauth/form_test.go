package oauth

import (
	"net/url"
	"strings"
	"testing"
)

var formSeeds = []string{
	"grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token=a.b.c&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Ajwt&scope=read%3Arepo%3Ax",
	"grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token=a.b.c&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aid_token&scope=read%3Arepo%3Ax&resource=https%3A%2F%2Fapi.example&requested_token_ttl=5m",
	"grant_type=client_credentials",
	"grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&scope=a&scope=b",
	"grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token=x&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Ajwt&requested_token_ttl=-1s",
	"actor_token=x",
	"",
}

// FuzzParseExchange: any form either parses or is refused with an RFC 6749
// error whose description names a parameter; nothing panics.
func FuzzParseExchange(f *testing.F) {
	for _, s := range formSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		form, err := url.ParseQuery(body)
		if err != nil {
			return
		}
		req, oerr := ParseExchange(form)
		if oerr != nil {
			if oerr.Field == "" || !strings.HasPrefix(oerr.Description, oerr.Field+": ") || oerr.Code == "" {
				t.Fatalf("refusal %+v does not name its field", oerr)
			}
			return
		}
		if req.SubjectToken == "" || (req.SubjectTokenType != TokenTypeJWT && req.SubjectTokenType != TokenTypeIDToken) {
			t.Fatalf("accepted %q without a subject token", body)
		}
	})
}

func TestParseExchangeSeeds(t *testing.T) {
	want := []bool{true, true, false, false, false, false, false}
	for i, s := range formSeeds {
		form, _ := url.ParseQuery(s)
		_, oerr := ParseExchange(form)
		if (oerr == nil) != want[i] {
			t.Errorf("%q: %v", s, oerr)
		}
	}
}
