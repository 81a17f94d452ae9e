package auth

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"math/big"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// testNow is the fixed clock of the tests.
var testNow = time.Unix(1_700_000_000, 0)

func fixedNow() time.Time { return testNow }

// keys is the key material of one test: generated, never read from files.
type keys struct {
	secret  []byte
	rsa     *rsa.PrivateKey
	ec      *ecdsa.PrivateKey
	otherEC *ecdsa.PrivateKey // a second P-256 key, for bad signatures

	rsaPKIX, rsaPKCS1, rsaCert []byte // PEM of rsa.Public()
	ecPKIX, ecCert             []byte // PEM of ec.Public()
}

func newKeys(t testing.TB) *keys {
	t.Helper()
	k := &keys{secret: []byte("0123456789abcdef0123456789abcdef")}
	var err error
	if k.rsa, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		t.Fatal(err)
	}
	if k.ec, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		t.Fatal(err)
	}
	if k.otherEC, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		t.Fatal(err)
	}
	k.rsaPKIX = pkixPEM(t, &k.rsa.PublicKey)
	k.rsaPKCS1 = pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&k.rsa.PublicKey)})
	k.rsaCert = certPEM(t, &k.rsa.PublicKey, k.rsa)
	k.ecPKIX = pkixPEM(t, &k.ec.PublicKey)
	k.ecCert = certPEM(t, &k.ec.PublicKey, k.ec)
	return k
}

func pkixPEM(t testing.TB, pub any) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// certPEM returns a self-signed certificate for pub, signed by priv.
func certPEM(t testing.TB, pub, priv any) []byte {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "presenced test"},
		NotBefore:    testNow.Add(-time.Hour),
		NotAfter:     testNow.Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, priv)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// sign returns the compact JWT of claims signed with method and key.
func sign(t testing.TB, method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// claims returns valid claims (sub, exp in an hour) changed by edits; a nil
// value deletes the claim.
func claims(edits jwt.MapClaims) jwt.MapClaims {
	c := jwt.MapClaims{"sub": "user-1", "exp": testNow.Add(time.Hour).Unix()}
	for k, v := range edits {
		if v == nil {
			delete(c, k)
			continue
		}
		c[k] = v
	}
	return c
}

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func mustNew(t testing.TB, cfg Config) *Verifier {
	t.Helper()
	v, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return v
}

func TestVerify(t *testing.T) {
	k := newKeys(t)
	hs := mustNew(t, Config{HS256Secret: k.secret, Leeway: NoLeeway, Now: fixedNow})
	byDefault := mustNew(t, Config{HS256Secret: k.secret, Now: fixedNow}) // DefaultLeeway
	rs := mustNew(t, Config{PublicKeyPEM: k.rsaPKIX, Now: fixedNow})
	es := mustNew(t, Config{PublicKeyPEM: k.ecPKIX, Now: fixedNow})
	scoped := mustNew(t, Config{HS256Secret: k.secret, Issuer: "https://login.example", Audience: "presenced", Now: fixedNow})
	lenient := mustNew(t, Config{HS256Secret: k.secret, Leeway: time.Minute, Now: fixedNow})

	hsTok := func(edits jwt.MapClaims) string { return sign(t, jwt.SigningMethodHS256, k.secret, claims(edits)) }
	exp := testNow.Add(time.Hour)
	valid := sign(t, jwt.SigningMethodHS256, k.secret, claims(nil))
	parts := strings.Split(valid, ".")

	tests := []struct {
		name    string
		v       *Verifier
		token   string
		want    *Claims // when the token is valid
		wantErr error   // ErrInvalidToken or ErrExpired
		reason  string  // the whole error message must be "auth: invalid token: " + reason
	}{
		// Valid tokens, one per algorithm.
		{name: "HS256 valid", v: hs, token: valid,
			want: &Claims{Subject: "user-1", Expires: exp}},
		{name: "RS256 valid", v: rs, token: sign(t, jwt.SigningMethodRS256, k.rsa, claims(nil)),
			want: &Claims{Subject: "user-1", Expires: exp}},
		{name: "ES256 valid", v: es, token: sign(t, jwt.SigningMethodES256, k.ec, claims(nil)),
			want: &Claims{Subject: "user-1", Expires: exp}},
		{name: "issuer and audience array", v: scoped, token: hsTok(jwt.MapClaims{"iss": "https://login.example", "aud": []string{"other", "presenced"}}),
			want: &Claims{Subject: "user-1", Expires: exp}},
		{name: "issuer and audience string", v: scoped, token: hsTok(jwt.MapClaims{"iss": "https://login.example", "aud": "presenced"}),
			want: &Claims{Subject: "user-1", Expires: exp}},
		{name: "sub of every allowed byte", v: hs, token: hsTok(jwt.MapClaims{"sub": "aZ09._:@/-"}),
			want: &Claims{Subject: "aZ09._:@/-", Expires: exp}},
		{name: "sub of 128 bytes", v: hs, token: hsTok(jwt.MapClaims{"sub": strings.Repeat("u", 128)}),
			want: &Claims{Subject: strings.Repeat("u", 128), Expires: exp}},
		{name: "nbf in the past", v: hs, token: hsTok(jwt.MapClaims{"nbf": testNow.Add(-time.Minute).Unix(), "iat": testNow.Unix()}),
			want: &Claims{Subject: "user-1", Expires: exp}},

		// The algorithm is pinned by the key.
		{name: "alg none on HS256", v: hs, token: sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, claims(nil)),
			wantErr: ErrInvalidToken, reason: "signing method none not allowed"},
		{name: "alg none on RS256", v: rs, token: sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, claims(nil)),
			wantErr: ErrInvalidToken, reason: "signing method none not allowed"},
		{name: "HS256 keyed with the RSA public PEM on RS256", v: rs, token: sign(t, jwt.SigningMethodHS256, k.rsaPKIX, claims(nil)),
			wantErr: ErrInvalidToken, reason: "signing method HS256 not allowed"},
		{name: "HS256 keyed with the EC public PEM on ES256", v: es, token: sign(t, jwt.SigningMethodHS256, k.ecPKIX, claims(nil)),
			wantErr: ErrInvalidToken, reason: "signing method HS256 not allowed"},
		{name: "RS256 on HS256", v: hs, token: sign(t, jwt.SigningMethodRS256, k.rsa, claims(nil)),
			wantErr: ErrInvalidToken, reason: "signing method RS256 not allowed"},
		{name: "ES256 on RS256", v: rs, token: sign(t, jwt.SigningMethodES256, k.ec, claims(nil)),
			wantErr: ErrInvalidToken, reason: "signing method ES256 not allowed"},
		{name: "RS256 on ES256", v: es, token: sign(t, jwt.SigningMethodRS256, k.rsa, claims(nil)),
			wantErr: ErrInvalidToken, reason: "signing method RS256 not allowed"},
		{name: "PS256 with the right key on RS256", v: rs, token: sign(t, jwt.SigningMethodPS256, k.rsa, claims(nil)),
			wantErr: ErrInvalidToken, reason: "signing method PS256 not allowed"},
		{name: "unknown alg", v: hs, token: b64(`{"alg":"XX256","typ":"JWT"}`) + "." + parts[1] + "." + parts[2],
			wantErr: ErrInvalidToken, reason: "unknown signing method"},
		{name: "no alg", v: hs, token: b64(`{"typ":"JWT"}`) + "." + parts[1] + "." + parts[2],
			wantErr: ErrInvalidToken, reason: "unknown signing method"},

		// Signatures.
		{name: "wrong secret", v: hs, token: sign(t, jwt.SigningMethodHS256, []byte("another secret of thirty-two byt"), claims(nil)),
			wantErr: ErrInvalidToken, reason: "bad signature"},
		{name: "ES256 by another key", v: es, token: sign(t, jwt.SigningMethodES256, k.otherEC, claims(nil)),
			wantErr: ErrInvalidToken, reason: "bad signature"},
		{name: "payload swapped", v: hs, token: parts[0] + "." + b64(`{"sub":"admin","exp":1900000000}`) + "." + parts[2],
			wantErr: ErrInvalidToken, reason: "bad signature"},
		{name: "signature stripped", v: hs, token: parts[0] + "." + parts[1] + ".",
			wantErr: ErrInvalidToken, reason: "bad signature"},

		// Malformed.
		{name: "empty", v: hs, token: "",
			wantErr: ErrInvalidToken, reason: "malformed"},
		{name: "garbage", v: hs, token: "garbage",
			wantErr: ErrInvalidToken, reason: "malformed"},
		{name: "garbage segments", v: hs, token: "a.b.c",
			wantErr: ErrInvalidToken, reason: "malformed"},
		{name: "four segments", v: hs, token: valid + ".x",
			wantErr: ErrInvalidToken, reason: "malformed"},
		{name: "exp not a number", v: hs, token: hsTok(jwt.MapClaims{"exp": "tomorrow"}),
			wantErr: ErrInvalidToken, reason: "malformed"},
		{name: "sub not a string", v: hs, token: hsTok(jwt.MapClaims{"sub": 42}),
			wantErr: ErrInvalidToken, reason: "malformed"},

		// Time.
		{name: "missing exp", v: hs, token: hsTok(jwt.MapClaims{"exp": nil}),
			wantErr: ErrInvalidToken, reason: "missing exp"},
		{name: "expired", v: hs, token: hsTok(jwt.MapClaims{"exp": testNow.Add(-time.Second).Unix()}),
			wantErr: ErrExpired, reason: "expired"},
		{name: "exp is now", v: hs, token: hsTok(jwt.MapClaims{"exp": testNow.Unix()}),
			wantErr: ErrExpired, reason: "expired"},
		{name: "expired within leeway", v: lenient, token: hsTok(jwt.MapClaims{"exp": testNow.Add(-30 * time.Second).Unix()}),
			want: &Claims{Subject: "user-1", Expires: testNow.Add(-30 * time.Second)}},
		{name: "expired within the default leeway", v: byDefault, token: hsTok(jwt.MapClaims{"exp": testNow.Add(-DefaultLeeway + time.Second).Unix()}),
			want: &Claims{Subject: "user-1", Expires: testNow.Add(-DefaultLeeway + time.Second)}},
		{name: "expired beyond the default leeway", v: byDefault, token: hsTok(jwt.MapClaims{"exp": testNow.Add(-DefaultLeeway - time.Second).Unix()}),
			wantErr: ErrExpired, reason: "expired"},
		{name: "iat in the future within the default leeway", v: byDefault, token: hsTok(jwt.MapClaims{"iat": testNow.Add(DefaultLeeway - time.Second).Unix()}),
			want: &Claims{Subject: "user-1", Expires: exp}},
		{name: "expired beyond leeway", v: lenient, token: hsTok(jwt.MapClaims{"exp": testNow.Add(-2 * time.Minute).Unix()}),
			wantErr: ErrExpired, reason: "expired"},
		{name: "expired and bad sub is not just expired", v: hs, token: hsTok(jwt.MapClaims{"exp": testNow.Add(-time.Second).Unix(), "sub": "a b"}),
			wantErr: ErrInvalidToken, reason: "bad sub"},
		{name: "expired and nbf in future is not just expired", v: hs, token: hsTok(jwt.MapClaims{"exp": testNow.Add(-time.Second).Unix(), "nbf": testNow.Add(time.Minute).Unix()}),
			wantErr: ErrInvalidToken, reason: "not valid yet"},
		{name: "expired and bad rooms is not just expired", v: hs, token: hsTok(jwt.MapClaims{"exp": testNow.Add(-time.Second).Unix(), "rooms": "chat:*"}),
			wantErr: ErrInvalidToken, reason: "rooms claim is not an array of strings"},
		{name: "nbf in the future", v: hs, token: hsTok(jwt.MapClaims{"nbf": testNow.Add(time.Minute).Unix()}),
			wantErr: ErrInvalidToken, reason: "not valid yet"},
		{name: "nbf in the future within leeway", v: lenient, token: hsTok(jwt.MapClaims{"nbf": testNow.Add(30 * time.Second).Unix()}),
			want: &Claims{Subject: "user-1", Expires: exp}},
		{name: "iat in the future", v: hs, token: hsTok(jwt.MapClaims{"iat": testNow.Add(time.Minute).Unix()}),
			wantErr: ErrInvalidToken, reason: "issued in the future"},

		// Issuer and audience.
		{name: "wrong issuer", v: scoped, token: hsTok(jwt.MapClaims{"iss": "https://evil.example", "aud": "presenced"}),
			wantErr: ErrInvalidToken, reason: "wrong issuer"},
		{name: "missing issuer", v: scoped, token: hsTok(jwt.MapClaims{"aud": "presenced"}),
			wantErr: ErrInvalidToken, reason: "missing iss"},
		{name: "wrong audience", v: scoped, token: hsTok(jwt.MapClaims{"iss": "https://login.example", "aud": []string{"other"}}),
			wantErr: ErrInvalidToken, reason: "wrong audience"},
		{name: "missing audience", v: scoped, token: hsTok(jwt.MapClaims{"iss": "https://login.example"}),
			wantErr: ErrInvalidToken, reason: "missing aud"},
		{name: "issuer and audience unchecked when not configured", v: hs, token: hsTok(jwt.MapClaims{"iss": "anyone", "aud": "anything"}),
			want: &Claims{Subject: "user-1", Expires: exp}},

		// Subject.
		{name: "missing sub", v: hs, token: hsTok(jwt.MapClaims{"sub": nil}),
			wantErr: ErrInvalidToken, reason: "missing sub"},
		{name: "empty sub", v: hs, token: hsTok(jwt.MapClaims{"sub": ""}),
			wantErr: ErrInvalidToken, reason: "missing sub"},
		{name: "sub with a space", v: hs, token: hsTok(jwt.MapClaims{"sub": "user 1"}),
			wantErr: ErrInvalidToken, reason: "bad sub"},
		{name: "sub with non-ASCII", v: hs, token: hsTok(jwt.MapClaims{"sub": "usér"}),
			wantErr: ErrInvalidToken, reason: "bad sub"},
		{name: "sub with a newline", v: hs, token: hsTok(jwt.MapClaims{"sub": "user\nadmin"}),
			wantErr: ErrInvalidToken, reason: "bad sub"},
		{name: "sub of 129 bytes", v: hs, token: hsTok(jwt.MapClaims{"sub": strings.Repeat("u", 129)}),
			wantErr: ErrInvalidToken, reason: "bad sub"},

		// Rooms.
		{name: "rooms valid", v: hs, token: hsTok(jwt.MapClaims{"rooms": []string{"chat:*", "doc:42"}}),
			want: &Claims{Subject: "user-1", Expires: exp, Rooms: []string{"chat:*", "doc:42"}}},
		{name: "rooms empty array", v: hs, token: hsTok(jwt.MapClaims{"rooms": []string{}}),
			want: &Claims{Subject: "user-1", Expires: exp, Rooms: []string{}}},
		{name: "rooms not an array", v: hs, token: hsTok(jwt.MapClaims{"rooms": "chat:*"}),
			wantErr: ErrInvalidToken, reason: "rooms claim is not an array of strings"},
		{name: "rooms an object", v: hs, token: hsTok(jwt.MapClaims{"rooms": map[string]any{"chat": true}}),
			wantErr: ErrInvalidToken, reason: "rooms claim is not an array of strings"},
		{name: "rooms with a number", v: hs, token: hsTok(jwt.MapClaims{"rooms": []any{"chat:*", 42}}),
			wantErr: ErrInvalidToken, reason: "rooms claim is not an array of strings"},
		{name: "rooms with null", v: hs, token: hsTok(jwt.MapClaims{"rooms": []any{"chat:*", nil}}),
			wantErr: ErrInvalidToken, reason: "rooms claim is not an array of strings"},
		{name: "rooms null", v: hs, token: signRaw(t, k.secret, `{"sub":"u","exp":1900000000,"rooms":null}`),
			wantErr: ErrInvalidToken, reason: "rooms claim is not an array of strings"},
		{name: "rooms with spaces around", v: hs, token: signRaw(t, k.secret, `{"sub":"u","exp":1900000000,"rooms": [ "a" , "b" ] }`),
			want: &Claims{Subject: "u", Expires: time.Unix(1900000000, 0), Rooms: []string{"a", "b"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.v.Verify(tt.token)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				if !equalClaims(got, tt.want) {
					t.Fatalf("Verify = %+v, want %+v", got, tt.want)
				}
				return
			}
			if got != nil {
				t.Errorf("Verify returned claims %+v with an error", got)
			}
			if !errors.Is(err, ErrInvalidToken) {
				t.Fatalf("Verify error %v does not wrap ErrInvalidToken", err)
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Verify error %v does not wrap %v", err, tt.wantErr)
			}
			if isExp := errors.Is(err, ErrExpired); isExp != (tt.wantErr == ErrExpired) {
				t.Errorf("errors.Is(%v, ErrExpired) = %v", err, isExp)
			}
			if want := "auth: invalid token: " + tt.reason; err.Error() != want {
				t.Errorf("Verify error = %q, want %q", err, want)
			}
		})
	}
}

// signRaw signs the exact JSON payload with HS256, to test payloads that
// jwt.MapClaims would not produce.
func signRaw(t testing.TB, secret []byte, payload string) string {
	t.Helper()
	unsigned := b64(`{"alg":"HS256","typ":"JWT"}`) + "." + b64(payload)
	sig, err := jwt.SigningMethodHS256.Sign(unsigned, secret)
	if err != nil {
		t.Fatal(err)
	}
	return unsigned + "." + base64.RawURLEncoding.EncodeToString(sig)
}

func equalClaims(a, b *Claims) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Subject == b.Subject && a.Expires.Equal(b.Expires) &&
		(a.Rooms == nil) == (b.Rooms == nil) && slices.Equal(a.Rooms, b.Rooms)
}

func TestNew(t *testing.T) {
	k := newKeys(t)
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	edPub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	// A 512-bit modulus: crypto/rsa would refuse every verification with it.
	// Built by hand, as GenerateKey refuses such sizes too.
	small := &rsa.PublicKey{N: new(big.Int).SetBit(big.NewInt(1), 511, 1), E: 65537}
	smallPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(small)})
	privDER, err := x509.MarshalPKCS8PrivateKey(k.rsa)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name    string
		cfg     Config
		wantAlg string // when New succeeds
		wantErr error
	}{
		{name: "HS256 secret", cfg: Config{HS256Secret: k.secret}, wantAlg: "HS256"},
		{name: "one-byte secret", cfg: Config{HS256Secret: []byte("x")}, wantAlg: "HS256"},
		{name: "RSA PKIX", cfg: Config{PublicKeyPEM: k.rsaPKIX}, wantAlg: "RS256"},
		{name: "RSA PKCS1", cfg: Config{PublicKeyPEM: k.rsaPKCS1}, wantAlg: "RS256"},
		{name: "RSA certificate", cfg: Config{PublicKeyPEM: k.rsaCert}, wantAlg: "RS256"},
		{name: "P-256 PKIX", cfg: Config{PublicKeyPEM: k.ecPKIX}, wantAlg: "ES256"},
		{name: "P-256 certificate", cfg: Config{PublicKeyPEM: k.ecCert}, wantAlg: "ES256"},
		{name: "PEM after text", cfg: Config{PublicKeyPEM: append([]byte("the key:\n"), k.ecPKIX...)}, wantAlg: "ES256"},
		{name: "no leeway", cfg: Config{HS256Secret: k.secret, Leeway: NoLeeway}, wantAlg: "HS256"},
		{name: "all options", cfg: Config{PublicKeyPEM: k.rsaPKIX, Issuer: "i", Audience: "a", Leeway: time.Second, Now: fixedNow}, wantAlg: "RS256"},

		{name: "zero config", cfg: Config{}, wantErr: errNoKey},
		{name: "both keys", cfg: Config{HS256Secret: k.secret, PublicKeyPEM: k.rsaPKIX}, wantErr: errTwoKeys},
		{name: "empty secret", cfg: Config{HS256Secret: []byte{}}, wantErr: errEmptySecret},
		{name: "empty PEM", cfg: Config{PublicKeyPEM: []byte{}}, wantErr: errNoPEM},
		{name: "not PEM", cfg: Config{PublicKeyPEM: []byte("ssh-rsa AAAA...")}, wantErr: errNoPEM},
		{name: "private key PEM", cfg: Config{PublicKeyPEM: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: privDER})}, wantErr: errPEMType},
		{name: "PUBLIC KEY of junk", cfg: Config{PublicKeyPEM: pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte("junk")})}, wantErr: errParseKey},
		{name: "RSA PUBLIC KEY of junk", cfg: Config{PublicKeyPEM: pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: []byte("junk")})}, wantErr: errParseKey},
		{name: "CERTIFICATE of junk", cfg: Config{PublicKeyPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("junk")})}, wantErr: errParseKey},
		{name: "P-384 key", cfg: Config{PublicKeyPEM: pkixPEM(t, &p384.PublicKey)}, wantErr: errCurve},
		{name: "Ed25519 key", cfg: Config{PublicKeyPEM: pkixPEM(t, edPub)}, wantErr: errKeyType},
		{name: "RSA 512 bits", cfg: Config{PublicKeyPEM: smallPEM}, wantErr: errRSASize},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := New(tt.cfg)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("New error = %v, want %v", err, tt.wantErr)
				}
				if v != nil {
					t.Error("New returned a Verifier with an error")
				}
				if !strings.HasPrefix(err.Error(), "auth: ") {
					t.Errorf("New error %q lacks the package prefix", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			if v.alg != tt.wantAlg {
				t.Fatalf("pinned algorithm = %s, want %s", v.alg, tt.wantAlg)
			}
		})
	}
}

// TestNewCopiesSecret shows that the Verifier does not share the caller's
// secret: changing it after New changes nothing.
func TestNewCopiesSecret(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	v := mustNew(t, Config{HS256Secret: secret, Now: fixedNow})
	token := sign(t, jwt.SigningMethodHS256, slices.Clone(secret), claims(nil))
	secret[0] ^= 0xff
	if _, err := v.Verify(token); err != nil {
		t.Fatalf("Verify after the caller changed its secret: %v", err)
	}
}

// TestVerifyConcurrent runs Verify from many goroutines (meaningful under
// -race): a Verifier is safe for concurrent use.
func TestVerifyConcurrent(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	v := mustNew(t, Config{HS256Secret: secret, Now: fixedNow})
	good := sign(t, jwt.SigningMethodHS256, secret, claims(jwt.MapClaims{"rooms": []string{"chat:*"}}))
	expired := sign(t, jwt.SigningMethodHS256, secret, claims(jwt.MapClaims{"exp": testNow.Add(-time.Hour).Unix()}))
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				if c, err := v.Verify(good); err != nil || !c.Allows("chat:1") {
					t.Errorf("Verify(good) = %+v, %v", c, err)
					return
				}
				if _, err := v.Verify(expired); !errors.Is(err, ErrExpired) {
					t.Errorf("Verify(expired) = %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestAllows(t *testing.T) {
	tests := []struct {
		name   string
		claims *Claims
		room   string
		want   bool
	}{
		{name: "nil rooms allow any room", claims: &Claims{Subject: "u"}, room: "chat:42", want: true},
		{name: "nil rooms allow the empty room", claims: &Claims{Subject: "u"}, room: "", want: true},
		{name: "empty rooms allow nothing", claims: &Claims{Subject: "u", Rooms: []string{}}, room: "chat:42", want: false},
		{name: "first pattern matches", claims: &Claims{Rooms: []string{"chat:*", "doc:1"}}, room: "chat:42", want: true},
		{name: "second pattern matches", claims: &Claims{Rooms: []string{"chat:*", "doc:1"}}, room: "doc:1", want: true},
		{name: "no pattern matches", claims: &Claims{Rooms: []string{"chat:*", "doc:1"}}, room: "doc:2", want: false},
		{name: "nil claims allow nothing", claims: nil, room: "chat:42", want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.claims.Allows(tt.room); got != tt.want {
				t.Fatalf("Allows(%q) = %v, want %v", tt.room, got, tt.want)
			}
		})
	}
}

// matchTests are the Match table, also the seeds of FuzzMatch.
var matchTests = []struct {
	name    string
	pattern string
	room    string
	want    bool
}{
	{name: "exact", pattern: "chat:42", room: "chat:42", want: true},
	{name: "exact mismatch", pattern: "chat:42", room: "chat:43", want: false},
	{name: "exact is not a prefix", pattern: "chat", room: "chat:42", want: false},
	{name: "exact is not a suffix", pattern: "chat:42", room: "chat", want: false},
	{name: "case matters", pattern: "Chat:42", room: "chat:42", want: false},
	{name: "prefix star", pattern: "chat:*", room: "chat:42", want: true},
	{name: "prefix star empty tail", pattern: "chat:*", room: "chat:", want: true},
	{name: "prefix star crosses separators", pattern: "chat:*", room: "chat:a:b/c", want: true},
	{name: "prefix star other prefix", pattern: "chat:*", room: "doc:42", want: false},
	{name: "prefix star too short", pattern: "chat:*", room: "chat", want: false},
	{name: "star alone", pattern: "*", room: "anything:at/all", want: true},
	{name: "star matches empty", pattern: "*", room: "", want: true},
	{name: "stars match empty", pattern: "***", room: "", want: true},
	{name: "question mark", pattern: "a?c", room: "abc", want: true},
	{name: "question mark matches colon", pattern: "a?c", room: "a:c", want: true},
	{name: "question mark needs a byte", pattern: "a?c", room: "ac", want: false},
	{name: "question mark only one byte", pattern: "a?c", room: "abbc", want: false},
	{name: "question mark is one byte not one rune", pattern: "a?c", room: "aéc", want: false},
	{name: "two question marks for a two-byte rune", pattern: "a??c", room: "aéc", want: true},
	{name: "suffix star", pattern: "*:42", room: "chat:42", want: true},
	{name: "suffix star nested", pattern: "*:42", room: "a:b:42", want: true},
	{name: "suffix star mismatch", pattern: "*:42", room: "chat:420", want: false},
	{name: "middle star", pattern: "chat:*:x", room: "chat:1:x", want: true},
	{name: "middle star empty", pattern: "chat:*:x", room: "chat::x", want: true},
	{name: "middle star spans colons", pattern: "chat:*:x", room: "chat:1:2:x", want: true},
	{name: "middle star needs the tail", pattern: "chat:*:x", room: "chat:1:x:y", want: false},
	{name: "middle star backtracks", pattern: "chat:*:x", room: "chat:x:x:x", want: true},
	{name: "empty pattern empty room", pattern: "", room: "", want: true},
	{name: "empty pattern", pattern: "", room: "a", want: false},
	{name: "empty room", pattern: "a", room: "", want: false},
	{name: "question mark vs empty room", pattern: "?", room: "", want: false},
	{name: "literal star in room needs star", pattern: "a*", room: "a*", want: true},
	{name: "star is not literal", pattern: "a*b", room: "axxb", want: true},
	{name: "question then star", pattern: "?*", room: "x", want: true},
	{name: "star then question", pattern: "*?", room: "", want: false},
	{name: "many stars long room", pattern: strings.Repeat("*a", 30) + "b", room: strings.Repeat("a", 10000), want: false},
	{name: "many stars long room match", pattern: strings.Repeat("*a", 30) + "*", room: strings.Repeat("a", 10000), want: true},
	{name: "many stars and question marks", pattern: strings.Repeat("*?", 40) + "x", room: strings.Repeat("?", 5000), want: false},
	{name: "long literal after stars", pattern: "*" + strings.Repeat("a", 100) + "b", room: strings.Repeat("a", 10000) + "b", want: true},
}

func TestMatch(t *testing.T) {
	for _, tt := range matchTests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Match(tt.pattern, tt.room); got != tt.want {
				t.Fatalf("Match(%.40q, %.40q) = %v, want %v", tt.pattern, tt.room, got, tt.want)
			}
		})
	}
}

// TestMatchBounded shows the work of Match grows polynomially, not
// exponentially: the worst case, many stars against a long room that almost
// matches, stays well under a second, and Match allocates nothing.
func TestMatchBounded(t *testing.T) {
	pattern := strings.Repeat("*a", 64) + "b"
	room := strings.Repeat("a", 1<<14)
	start := time.Now()
	if Match(pattern, room) {
		t.Fatal("matched")
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("Match took %v", d)
	}
	if n := testing.AllocsPerRun(10, func() { sinkBool = Match("chat:*:x", "chat:1:2:3:x") }); n != 0 {
		t.Fatalf("Match allocates %v times", n)
	}
}

// refMatch is the reference of FuzzMatch: the definition of the glob syntax
// as a recursion, memoized on (pattern offset, room offset) so that it stays
// fast on the inputs the fuzzer builds.
func refMatch(pattern, room string) bool {
	memo := make(map[[2]int]bool)
	var match func(p, r int) bool
	match = func(p, r int) bool {
		key := [2]int{p, r}
		if v, ok := memo[key]; ok {
			return v
		}
		var v bool
		switch {
		case p == len(pattern):
			v = r == len(room)
		case pattern[p] == '*':
			v = match(p+1, r) || (r < len(room) && match(p, r+1))
		case r == len(room):
			v = false
		case pattern[p] == '?' || pattern[p] == room[r]:
			v = match(p+1, r+1)
		}
		memo[key] = v
		return v
	}
	return match(0, 0)
}

func FuzzMatch(f *testing.F) {
	for _, tt := range matchTests {
		if len(tt.pattern) <= 64 && len(tt.room) <= 64 {
			f.Add(tt.pattern, tt.room)
		}
	}
	f.Add("*a*b*c", "xaxbxcx")
	f.Add("??*?", "abc")
	f.Fuzz(func(t *testing.T, pattern, room string) {
		if len(pattern) > 64 || len(room) > 256 {
			t.Skip("the reference is quadratic in memory")
		}
		if got, want := Match(pattern, room), refMatch(pattern, room); got != want {
			t.Fatalf("Match(%q, %q) = %v, reference says %v", pattern, room, got, want)
		}
	})
}

func BenchmarkVerifyHS256(b *testing.B) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	v := mustNew(b, Config{HS256Secret: secret, Issuer: "https://login.example", Audience: "presenced", Now: fixedNow})
	token := sign(b, jwt.SigningMethodHS256, secret, claims(jwt.MapClaims{
		"iss":   "https://login.example",
		"aud":   "presenced",
		"iat":   testNow.Unix(),
		"rooms": []string{"chat:*", "doc:42"},
	}))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(token); err != nil {
			b.Fatal(err)
		}
	}
}

// sinkBool keeps results the compiler could otherwise drop.
var sinkBool bool
