package credential

import (
	"encoding/json"
	"errors"
	"time"

	"github.com/go-jose/go-jose/v4/jwt"
)

// ReceiptType is the JOSE typ of decision receipts: not at+jwt, so a
// receipt never passes as a token, nor a token as a receipt.
const ReceiptType = "mandate-receipt+jwt"

// Receipt is a signed decision: what was asked, what mandate answered, and
// the SpiceDB revision it answered at.
type Receipt struct {
	Issuer           string           `json:"iss"`
	IssuedAt         *jwt.NumericDate `json:"iat"`
	DecisionID       string           `json:"decision_id"`
	Allowed          bool             `json:"allowed"`
	ReasonCode       string           `json:"reason_code"`
	Subject          string           `json:"sub"`
	Act              *Actor           `json:"act,omitempty"`
	Principal        string           `json:"principal,omitempty"`
	Task             string           `json:"task,omitempty"`
	Permission       string           `json:"permission"`
	Resource         string           `json:"resource"`
	ConsistencyToken string           `json:"consistency_token,omitempty"`
	// TokenID is the jti of the subject_token the check was asked with.
	TokenID string `json:"token_jti,omitempty"`
}

// SignReceipt signs a receipt with the first key; iss and iat are set here.
func (t *Tokens) SignReceipt(r Receipt) (string, error) {
	r.Issuer, r.IssuedAt = t.cfg.Issuer, jwt.NewNumericDate(t.cfg.Now().Truncate(time.Second))
	payload, err := json.Marshal(r)
	if err != nil {
		return "", err
	}
	return t.cfg.Keys.sign(ReceiptType, payload)
}

// VerifyReceipt checks a receipt's signature, typ and issuer. Receipts do
// not expire: they record what was decided.
func (t *Tokens) VerifyReceipt(raw string) (*Receipt, error) {
	payload, err := t.cfg.Keys.verify(raw, ReceiptType)
	if err != nil {
		return nil, invalidToken("%v", err)
	}
	var r Receipt
	if err := json.Unmarshal(payload, &r); err != nil {
		return nil, invalidToken("malformed receipt")
	}
	if r.Issuer != t.cfg.Issuer {
		return nil, invalidToken("receipt from another issuer")
	}
	if r.DecisionID == "" {
		return nil, errors.New("receipt without a decision id")
	}
	return &r, nil
}
