package auth

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// ErrInvalidToken is wrapped by every error Verify returns, after a short
// reason: "auth: invalid token: missing exp".
var ErrInvalidToken = errors.New("auth: invalid token")

// ErrExpired is returned by Verify when the only fault of a token is an exp
// in the past (beyond Config.Leeway). It wraps ErrInvalidToken, so both
// errors.Is(err, ErrExpired) and errors.Is(err, ErrInvalidToken) hold.
var ErrExpired = fmt.Errorf("%w: expired", ErrInvalidToken)

// Errors of New. They are not exported: a configuration error is fatal at
// startup and its message is what an operator needs.
var (
	errNoKey       = errors.New("auth: no key: set HS256Secret or PublicKeyPEM")
	errTwoKeys     = errors.New("auth: both HS256Secret and PublicKeyPEM set: set exactly one")
	errEmptySecret = errors.New("auth: HS256Secret is empty")
	errNoPEM       = errors.New("auth: PublicKeyPEM holds no PEM block")
	errPEMType     = errors.New("auth: unsupported PEM block type")
	errParseKey    = errors.New("auth: cannot parse public key")
	errKeyType     = errors.New("auth: unsupported public key type")
	errCurve       = errors.New("auth: unsupported ECDSA curve: only P-256 (ES256)")
	errRSASize     = errors.New("auth: RSA key too small")
)

// minRSABits is the smallest RSA modulus crypto/rsa verifies with (see the
// rsa1024min GODEBUG); New refuses smaller keys instead of failing every
// Verify.
const minRSABits = 1024

// Config configures a Verifier. Exactly one of HS256Secret and PublicKeyPEM
// must be set; the zero value of every other field works.
type Config struct {
	// HS256Secret is the HMAC secret; tokens must then be HS256. Set means
	// non-nil; a non-nil empty secret is an error. RFC 7518 asks for at least
	// 32 bytes. New copies it.
	HS256Secret []byte

	// PublicKeyPEM is a PEM public key: "PUBLIC KEY" (PKIX), "RSA PUBLIC KEY"
	// (PKCS #1) or "CERTIFICATE" (its key is used, the certificate itself is
	// not validated). An RSA key (at least 1024 bits) makes tokens RS256; an
	// ECDSA P-256 key makes them ES256. Other curves and key types are
	// errors. Only the first PEM block is read. Set means non-nil.
	PublicKeyPEM []byte

	// Issuer, when set, must equal the token's iss. Default "": iss is not
	// checked.
	Issuer string

	// Audience, when set, must be one of the token's aud values. Default "":
	// aud is not checked.
	Audience string

	// Leeway is the clock skew allowed on exp, nbf and iat. Default 0:
	// DefaultLeeway. NoLeeway (any negative value) allows none: the claims
	// are checked against the clock exactly.
	Leeway time.Duration

	// Now is the clock. Default time.Now; tests set it.
	Now func() time.Time
}

// DefaultLeeway is the clock skew a zero Config.Leeway allows. It is defined
// here only: internal/server and the -jwt-leeway flag use it.
const DefaultLeeway = 5 * time.Second

// NoLeeway, as Config.Leeway, allows no clock skew at all.
const NoLeeway time.Duration = -1

// Verifier verifies tokens against one key and one pinned algorithm. It is
// static after New and safe for concurrent use.
type Verifier struct {
	alg     string // pinned signing algorithm: HS256, RS256 or ES256
	key     any    // []byte, *rsa.PublicKey or *ecdsa.PublicKey, matching alg
	parser  *jwt.Parser
	keyFunc jwt.Keyfunc // built once so Verify does not allocate a closure
}

// New returns a Verifier for cfg, or an error saying what is wrong with cfg.
func New(cfg Config) (*Verifier, error) {
	hasSecret, hasPEM := cfg.HS256Secret != nil, cfg.PublicKeyPEM != nil
	switch {
	case hasSecret && hasPEM:
		return nil, errTwoKeys
	case !hasSecret && !hasPEM:
		return nil, errNoKey
	}
	switch {
	case cfg.Leeway == 0:
		cfg.Leeway = DefaultLeeway
	case cfg.Leeway < 0:
		cfg.Leeway = 0
	}

	v := &Verifier{}
	if hasSecret {
		if len(cfg.HS256Secret) == 0 {
			return nil, errEmptySecret
		}
		v.alg, v.key = jwt.SigningMethodHS256.Alg(), bytes.Clone(cfg.HS256Secret)
	} else {
		var err error
		if v.alg, v.key, err = parsePublicKey(cfg.PublicKeyPEM); err != nil {
			return nil, err
		}
	}

	opts := []jwt.ParserOption{
		jwt.WithValidMethods([]string{v.alg}),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(cfg.Leeway),
	}
	if cfg.Now != nil {
		opts = append(opts, jwt.WithTimeFunc(cfg.Now))
	}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	v.parser = jwt.NewParser(opts...)
	v.keyFunc = v.lookupKey
	return v, nil
}

// parsePublicKey decodes the first PEM block of data and returns the
// algorithm its key pins and the key.
func parsePublicKey(data []byte) (alg string, key any, err error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return "", nil, errNoPEM
	}
	var pub any
	switch block.Type {
	case "PUBLIC KEY":
		pub, err = x509.ParsePKIXPublicKey(block.Bytes)
	case "RSA PUBLIC KEY":
		pub, err = x509.ParsePKCS1PublicKey(block.Bytes)
	case "CERTIFICATE":
		var cert *x509.Certificate
		if cert, err = x509.ParseCertificate(block.Bytes); err == nil {
			pub = cert.PublicKey
		}
	default:
		return "", nil, fmt.Errorf("%w %q: want PUBLIC KEY, RSA PUBLIC KEY or CERTIFICATE", errPEMType, block.Type)
	}
	if err != nil {
		return "", nil, fmt.Errorf("%w (%s): %w", errParseKey, block.Type, err)
	}

	switch k := pub.(type) {
	case *rsa.PublicKey:
		if bits := k.N.BitLen(); bits < minRSABits {
			return "", nil, fmt.Errorf("%w: %d bits, want at least %d", errRSASize, bits, minRSABits)
		}
		return jwt.SigningMethodRS256.Alg(), k, nil
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return "", nil, fmt.Errorf("%w, got %s", errCurve, k.Curve.Params().Name)
		}
		return jwt.SigningMethodES256.Alg(), k, nil
	default:
		return "", nil, fmt.Errorf("%w %T: want RSA or ECDSA P-256", errKeyType, pub)
	}
}

// lookupKey is the jwt.Keyfunc of v. The parser has already refused every
// other algorithm; the check here keeps the pin even if that changed.
func (v *Verifier) lookupKey(t *jwt.Token) (any, error) {
	if t.Method == nil || t.Method.Alg() != v.alg {
		return nil, errors.New("algorithm not pinned")
	}
	return v.key, nil
}

// Claims is what a verified token says about its holder.
type Claims struct {
	Subject string    // sub: the user, 1–128 bytes of [A-Za-z0-9._:@/-]
	Expires time.Time // exp
	Rooms   []string  // rooms: glob patterns of Match; nil: every room
}

// Allows reports whether the claims permit joining room: true when Rooms is
// nil, else when any of its patterns matches room. A nil *Claims allows
// nothing.
func (c *Claims) Allows(room string) bool {
	if c == nil {
		return false
	}
	if c.Rooms == nil {
		return true
	}
	for _, p := range c.Rooms {
		if Match(p, room) {
			return true
		}
	}
	return false
}

// tokenClaims is the JSON payload Verify decodes.
type tokenClaims struct {
	jwt.RegisteredClaims
	// Rooms is kept raw so that a bad value is reported as a bad rooms
	// claim, after the signature is verified, not as a malformed token.
	Rooms json.RawMessage `json:"rooms,omitempty"`
}

// maxSubject is the longest sub accepted, in bytes.
const maxSubject = 128

// Verify checks the compact JWT token and returns its claims. See the
// package documentation for what is checked. Every error wraps
// ErrInvalidToken; an expired but otherwise valid token returns ErrExpired.
func (v *Verifier) Verify(token string) (*Claims, error) {
	var tc tokenClaims
	t, err := v.parser.ParseWithClaims(token, &tc, v.keyFunc)
	if err != nil && !errors.Is(err, jwt.ErrTokenInvalidClaims) {
		// The signature was not verified: say why, trust nothing in tc.
		return nil, invalid(v.parseReason(t, err))
	}
	// The signature is good; err, if any, is about exp, nbf, iat, iss or aud.
	if reason := v.claimsReason(&tc, err); reason != "" {
		return nil, invalid(reason)
	}
	rooms, reason := parseRooms(tc.Rooms)
	if reason != "" {
		return nil, invalid(reason)
	}
	if err != nil {
		if errors.Is(err, jwt.ErrTokenExpired) {
			return nil, ErrExpired
		}
		return nil, invalid("invalid claims") // not reached with jwt v5.3
	}
	return &Claims{Subject: tc.Subject, Expires: tc.ExpiresAt.Time, Rooms: rooms}, nil
}

func invalid(reason string) error {
	return fmt.Errorf("%w: %s", ErrInvalidToken, reason)
}

// parseReason names why the parser refused a token before its claims were
// validated. t may be nil.
func (v *Verifier) parseReason(t *jwt.Token, err error) string {
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		return "malformed"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		// Either the algorithm is not the pinned one, or the signature is bad.
		// The algorithm name is that of a registered jwt method, not free text.
		if t != nil && t.Method != nil && t.Method.Alg() != v.alg {
			return "signing method " + t.Method.Alg() + " not allowed"
		}
		return "bad signature"
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		return "unknown signing method"
	default:
		return "unverifiable"
	}
}

// claimsReason names the first fault of the signed claims tc other than an
// expired exp, or returns "". err is the parser's claim validation error.
func (v *Verifier) claimsReason(tc *tokenClaims, err error) string {
	switch {
	case tc.ExpiresAt == nil:
		return "missing exp"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		// exp is present, so it is iss or aud (both only when configured).
		if tc.Issuer == "" {
			return "missing iss"
		}
		return "missing aud"
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return "wrong issuer"
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return "wrong audience"
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return "not valid yet"
	case errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return "issued in the future"
	case tc.Subject == "":
		return "missing sub"
	case !validSubject(tc.Subject):
		return "bad sub"
	}
	return ""
}

// validSubject reports whether sub is 1–maxSubject bytes of
// [A-Za-z0-9._:@/-].
func validSubject(sub string) bool {
	if len(sub) == 0 || len(sub) > maxSubject {
		return false
	}
	for i := 0; i < len(sub); i++ {
		switch c := sub[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '.', c == '_', c == ':', c == '@', c == '/', c == '-':
		default:
			return false
		}
	}
	return true
}

// parseRooms decodes the raw rooms claim: absent is nil (every room), an
// array of strings is that list (empty: no room), anything else, null
// included, is a reason to refuse the token.
func parseRooms(raw json.RawMessage) ([]string, string) {
	if len(raw) == 0 {
		return nil, ""
	}
	const bad = "rooms claim is not an array of strings"
	if raw[0] != '[' { // null, string, number, object, bool
		return nil, bad
	}
	// Decoding into []string would turn a null element into "" silently.
	var elems []any
	if err := json.Unmarshal(raw, &elems); err != nil {
		return nil, bad
	}
	rooms := make([]string, len(elems)) // non-nil even when empty: no room
	for i, e := range elems {
		s, ok := e.(string)
		if !ok {
			return nil, bad
		}
		rooms[i] = s
	}
	return rooms, ""
}
