package auth

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

const testSecret = "0123456789abcdef0123456789abcdef" // 32 bytes

var (
	keysOnce sync.Once
	rsaKey   *rsa.PrivateKey
	rsaKey2  *rsa.PrivateKey
	ecKey    *ecdsa.PrivateKey
	edPub    ed25519.PublicKey
	edKey    ed25519.PrivateKey
)

func testKeys(t testing.TB) {
	t.Helper()
	keysOnce.Do(func() {
		var err error
		if rsaKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
		if rsaKey2, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
		if ecKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			panic(err)
		}
		if edPub, edKey, err = ed25519.GenerateKey(rand.Reader); err != nil {
			panic(err)
		}
	})
}

func writePEM(t testing.TB, pub any) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "key.pem")
	writeFile(t, path, string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})), 0o644)
	return path
}

var t0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

// sign creates a token with the given method, key, claims and optional kid.
func sign(t testing.TB, m jwt.SigningMethod, key any, claims jwt.MapClaims, kid string) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func baseClaims() jwt.MapClaims {
	return jwt.MapClaims{
		"sub":       "alice",
		"exp":       t0.Add(time.Hour).Unix(),
		"roles":     []string{"ops", "dev"},
		"publish":   []string{"tele/%u/#"},
		"subscribe": []string{"cmd/%u/+"},
	}
}

func mustJWT(t testing.TB, cfg JWTConfig) *JWTVerifier {
	t.Helper()
	v, err := NewJWT(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestJWTVerifyHS256(t *testing.T) {
	v := mustJWT(t, JWTConfig{Secret: testSecret})
	tok := sign(t, jwt.SigningMethodHS256, []byte(testSecret), baseClaims(), "")
	if !LooksLikeJWT([]byte(tok)) {
		t.Error("LooksLikeJWT = false for a real token")
	}
	id, err := v.Verify(tok, t0)
	if err != nil {
		t.Fatal(err)
	}
	if id.Username != "alice" || id.Anonymous || id.ClientID != "" ||
		!slices.Equal(id.Roles, []string{"ops", "dev"}) ||
		!slices.Equal(id.TokenPublish, []string{"tele/%u/#"}) ||
		!slices.Equal(id.TokenSubscribe, []string{"cmd/%u/+"}) ||
		!id.Expires.Equal(t0.Add(time.Hour)) {
		t.Errorf("identity = %+v", id)
	}
	// The identity plugs into the ACL scopes.
	id.ClientID = "c"
	if !(*ACL)(nil).CanPublish(id, "tele/alice/x") || (*ACL)(nil).CanPublish(id, "tele/bob/x") {
		t.Error("token scope not applied")
	}
}

func TestJWTVerifyPublicKeys(t *testing.T) {
	testKeys(t)
	for _, tc := range []struct {
		name string
		pub  any
		m    jwt.SigningMethod
		priv any
	}{
		{"RS256", &rsaKey.PublicKey, jwt.SigningMethodRS256, rsaKey},
		{"PS256", &rsaKey.PublicKey, jwt.SigningMethodPS256, rsaKey},
		{"ES256", &ecKey.PublicKey, jwt.SigningMethodES256, ecKey},
		{"EdDSA", edPub, jwt.SigningMethodEdDSA, edKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := mustJWT(t, JWTConfig{PublicKeyFile: writePEM(t, tc.pub)})
			id, err := v.Verify(sign(t, tc.m, tc.priv, baseClaims(), ""), t0)
			if err != nil || id.Username != "alice" {
				t.Fatalf("Verify = %+v, %v", id, err)
			}
		})
	}
}

func TestJWTRejects(t *testing.T) {
	testKeys(t)
	hs := mustJWT(t, JWTConfig{Secret: testSecret, Issuer: "mote-idp", Audience: "mote"})
	rs := mustJWT(t, JWTConfig{PublicKeyFile: writePEM(t, &rsaKey.PublicKey)})
	es := mustJWT(t, JWTConfig{PublicKeyFile: writePEM(t, &ecKey.PublicKey)})

	good := func() jwt.MapClaims {
		c := baseClaims()
		c["iss"] = "mote-idp"
		c["aud"] = "mote"
		return c
	}
	with := func(k string, val any) jwt.MapClaims {
		c := good()
		if val == nil {
			delete(c, k)
		} else {
			c[k] = val
		}
		return c
	}
	rsaPEM, _ := os.ReadFile(writePEM(t, &rsaKey.PublicKey))

	for _, tc := range []struct {
		name  string
		v     *JWTVerifier
		token string
		want  string
	}{
		{"control", hs, sign(t, jwt.SigningMethodHS256, []byte(testSecret), good(), ""), ""},
		{"expired", hs, sign(t, jwt.SigningMethodHS256, []byte(testSecret), with("exp", t0.Add(-time.Second).Unix()), ""), "expired"},
		{"not yet valid", hs, sign(t, jwt.SigningMethodHS256, []byte(testSecret), with("nbf", t0.Add(time.Minute).Unix()), ""), "not valid yet"},
		{"wrong issuer", hs, sign(t, jwt.SigningMethodHS256, []byte(testSecret), with("iss", "evil"), ""), "issuer"},
		{"missing issuer", hs, sign(t, jwt.SigningMethodHS256, []byte(testSecret), with("iss", nil), ""), "iss"},
		{"wrong audience", hs, sign(t, jwt.SigningMethodHS256, []byte(testSecret), with("aud", "other"), ""), "audience"},
		{"wrong secret", hs, sign(t, jwt.SigningMethodHS256, []byte(testSecret+"x"), good(), ""), "signature is invalid"},
		{"HS384 with HS256 secret", hs, sign(t, jwt.SigningMethodHS384, []byte(testSecret), good(), ""), "signing method HS384 is invalid"},
		{"alg none", hs, sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, good(), ""), "signing method none is invalid"},
		{"alg none vs RSA", rs, sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, baseClaims(), ""), "signing method none is invalid"},
		// Classic confusion: HMAC-sign with the RSA public key bytes.
		{"HS256 with RSA public key as secret", rs, sign(t, jwt.SigningMethodHS256, rsaPEM, baseClaims(), ""), "signing method HS256 is invalid"},
		{"RS256 wrong key", rs, sign(t, jwt.SigningMethodRS256, rsaKey2, baseClaims(), ""), "verification error"},
		{"ES256 token for RSA key", rs, sign(t, jwt.SigningMethodES256, ecKey, baseClaims(), ""), "signing method ES256 is invalid"},
		{"RS256 token for EC key", es, sign(t, jwt.SigningMethodRS256, rsaKey, baseClaims(), ""), "signing method RS256 is invalid"},
		{"no username", hs, sign(t, jwt.SigningMethodHS256, []byte(testSecret), with("sub", nil), ""), `claim "sub"`},
		{"username not string", hs, sign(t, jwt.SigningMethodHS256, []byte(testSecret), with("sub", 42), ""), `claim "sub"`},
		{"roles not strings", hs, sign(t, jwt.SigningMethodHS256, []byte(testSecret), with("roles", []any{"a", 1}), ""), `claim "roles"[1]`},
		{"publish not array", hs, sign(t, jwt.SigningMethodHS256, []byte(testSecret), with("publish", 7), ""), `claim "publish" is float64`},
		{"invalid filter in scope", hs, sign(t, jwt.SigningMethodHS256, []byte(testSecret), with("subscribe", []string{"a/#/b"}), ""), `claim "subscribe"[0] "a/#/b" is not a valid topic filter`},
		{"garbage", hs, "not.a.token", "malformed"},
		{"too long", hs, strings.Repeat("a", maxTokenLen+1), "more than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.v.Verify(tc.token, t0)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestJWTExpiryAndLeeway(t *testing.T) {
	c := baseClaims()
	c["exp"] = t0.Unix()
	c["nbf"] = t0.Add(10 * time.Second).Unix()
	tok := sign(t, jwt.SigningMethodHS256, []byte(testSecret), c, "")
	strict := mustJWT(t, JWTConfig{Secret: testSecret})
	lenient := mustJWT(t, JWTConfig{Secret: testSecret, Leeway: 30 * time.Second})
	if _, err := strict.Verify(tok, t0.Add(5*time.Second)); err == nil {
		t.Error("strict verifier accepted an expired, not-yet-valid token")
	}
	if _, err := lenient.Verify(tok, t0.Add(5*time.Second)); err != nil {
		t.Errorf("leeway not honoured: %v", err)
	}
	if _, err := lenient.Verify(tok, t0.Add(time.Minute)); err == nil {
		t.Error("expired beyond the leeway but accepted")
	}

	noExp := baseClaims()
	delete(noExp, "exp")
	tok = sign(t, jwt.SigningMethodHS256, []byte(testSecret), noExp, "")
	id, err := strict.Verify(tok, t0)
	if err != nil || !id.Expires.IsZero() {
		t.Errorf("token without exp: %+v, %v (want zero Expires)", id, err)
	}
	req := mustJWT(t, JWTConfig{Secret: testSecret, RequireExpiry: true})
	if _, err := req.Verify(tok, t0); err == nil || !strings.Contains(err.Error(), "exp") {
		t.Errorf("RequireExpiry: error = %v", err)
	}
}

func TestJWTClaimsConfig(t *testing.T) {
	v := mustJWT(t, JWTConfig{
		Secret:         testSecret,
		UsernameClaim:  "preferred_username",
		RolesClaim:     "groups",
		PublishClaim:   "mqtt_pub",
		SubscribeClaim: "mqtt_sub",
	})
	tok := sign(t, jwt.SigningMethodHS256, []byte(testSecret), jwt.MapClaims{
		"sub":                "ignored",
		"preferred_username": "bob",
		"groups":             "a b,c",
		"mqtt_pub":           "single/topic",
		"mqtt_sub":           []string{},
	}, "")
	id, err := v.Verify(tok, t0)
	if err != nil {
		t.Fatal(err)
	}
	if id.Username != "bob" || !slices.Equal(id.Roles, []string{"a", "b", "c"}) ||
		!slices.Equal(id.TokenPublish, []string{"single/topic"}) ||
		id.TokenSubscribe == nil || len(id.TokenSubscribe) != 0 {
		t.Errorf("identity = %#v", id)
	}
	// Absent scope claims give nil (no scope), not an empty list.
	tok = sign(t, jwt.SigningMethodHS256, []byte(testSecret), jwt.MapClaims{"preferred_username": "bob"}, "")
	if id, err = v.Verify(tok, t0); err != nil || id.TokenPublish != nil || id.TokenSubscribe != nil || id.Roles != nil {
		t.Errorf("identity = %#v, %v", id, err)
	}
}

func b64u(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func writeJWKS(t testing.TB, keys ...map[string]string) string {
	t.Helper()
	data, err := json.Marshal(map[string]any{"keys": keys})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "jwks.json")
	writeFile(t, path, string(data), 0o644)
	return path
}

func rsaJWK(kid string, k *rsa.PublicKey) map[string]string {
	return map[string]string{"kty": "RSA", "kid": kid, "use": "sig", "n": b64u(k.N.Bytes()), "e": b64u(big.NewInt(int64(k.E)).Bytes())}
}

func ecJWK(kid string, k *ecdsa.PublicKey) map[string]string {
	enc, err := k.Bytes()
	if err != nil {
		panic(err)
	}
	return map[string]string{"kty": "EC", "kid": kid, "crv": "P-256", "x": b64u(enc[1:33]), "y": b64u(enc[33:])}
}

func TestJWKS(t *testing.T) {
	testKeys(t)
	path := writeJWKS(t,
		rsaJWK("rsa-1", &rsaKey.PublicKey),
		ecJWK("ec-1", &ecKey.PublicKey),
		map[string]string{"kty": "oct", "kid": "sym", "k": b64u([]byte(testSecret))},            // skipped
		map[string]string{"kty": "RSA", "kid": "enc-1", "use": "enc", "n": "AQAB", "e": "AQAB"}, // skipped
		map[string]string{"kty": "OKP", "kid": "ed-1", "crv": "Ed25519", "x": b64u(edPub), "alg": "EdDSA"},
	)
	v := mustJWT(t, JWTConfig{JWKSFile: path})
	for _, tc := range []struct {
		name  string
		token string
		want  string
	}{
		{"rsa kid", sign(t, jwt.SigningMethodRS256, rsaKey, baseClaims(), "rsa-1"), ""},
		{"ec kid", sign(t, jwt.SigningMethodES256, ecKey, baseClaims(), "ec-1"), ""},
		{"ed kid", sign(t, jwt.SigningMethodEdDSA, edKey, baseClaims(), "ed-1"), ""},
		{"rsa token under ec kid", sign(t, jwt.SigningMethodRS256, rsaKey, baseClaims(), "ec-1"), "not allowed for this key"},
		{"ec token under rsa kid", sign(t, jwt.SigningMethodES256, ecKey, baseClaims(), "rsa-1"), "not allowed for this key"},
		{"wrong rsa key", sign(t, jwt.SigningMethodRS256, rsaKey2, baseClaims(), "rsa-1"), "verification error"},
		{"unknown kid", sign(t, jwt.SigningMethodRS256, rsaKey, baseClaims(), "nope"), `unknown kid "nope"`},
		{"no kid", sign(t, jwt.SigningMethodRS256, rsaKey, baseClaims(), ""), `no "kid"`},
		{"oct key not usable", sign(t, jwt.SigningMethodHS256, []byte(testSecret), baseClaims(), "sym"), "signing method HS256 is invalid"},
		{"enc key not usable", sign(t, jwt.SigningMethodRS256, rsaKey, baseClaims(), "enc-1"), `unknown kid "enc-1"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, err := v.Verify(tc.token, t0)
			if tc.want == "" {
				if err != nil || id.Username != "alice" {
					t.Fatalf("Verify = %+v, %v", id, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v, want it to contain %q", err, tc.want)
			}
		})
	}

	// A single key without kid is used for tokens without kid.
	single := mustJWT(t, JWTConfig{JWKSFile: writeJWKS(t, rsaJWK("", &rsaKey.PublicKey))})
	if _, err := single.Verify(sign(t, jwt.SigningMethodRS256, rsaKey, baseClaims(), ""), t0); err != nil {
		t.Errorf("single kid-less key: %v", err)
	}
	// A JWK "alg" restricts its key.
	restricted := mustJWT(t, JWTConfig{JWKSFile: writeJWKS(t, func() map[string]string {
		k := rsaJWK("r", &rsaKey.PublicKey)
		k["alg"] = "PS256"
		return k
	}())})
	if _, err := restricted.Verify(sign(t, jwt.SigningMethodRS256, rsaKey, baseClaims(), "r"), t0); err == nil {
		t.Error("RS256 accepted for a PS256-only key")
	}
	if _, err := restricted.Verify(sign(t, jwt.SigningMethodPS256, rsaKey, baseClaims(), "r"), t0); err != nil {
		t.Errorf("PS256: %v", err)
	}
}

func TestNewJWTErrors(t *testing.T) {
	testKeys(t)
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.pem")
	writeFile(t, garbage, "hello", 0o644)
	privPath := filepath.Join(dir, "priv.pem")
	der, _ := x509.MarshalPKCS8PrivateKey(ecKey)
	writeFile(t, privPath, string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})), 0o600)
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		cfg  JWTConfig
		want string
	}{
		{"none", JWTConfig{}, "auth.jwt: set exactly one of secret, public_key_file or jwks_file (got none)"},
		{"two", JWTConfig{Secret: testSecret, JWKSFile: "x"}, "(got secret, jwks_file)"},
		{"short secret", JWTConfig{Secret: "short"}, "auth.jwt.secret: too short (5 bytes)"},
		{"negative leeway", JWTConfig{Secret: testSecret, Leeway: -time.Second}, "auth.jwt.leeway"},
		{"missing key file", JWTConfig{PublicKeyFile: filepath.Join(dir, "nope.pem")}, "auth.jwt.public_key_file: open"},
		{"not PEM", JWTConfig{PublicKeyFile: garbage}, "auth.jwt.public_key_file: " + garbage + ": no PEM public key"},
		{"private key", JWTConfig{PublicKeyFile: privPath}, "contains a private key"},
		{"small RSA", JWTConfig{PublicKeyFile: writePEM(t, &small.PublicKey)}, "RSA key is 1024 bits"},
		{"missing jwks", JWTConfig{JWKSFile: filepath.Join(dir, "nope.json")}, "auth.jwt.jwks_file: open"},
		{"jwks not json", JWTConfig{JWKSFile: garbage}, "auth.jwt.jwks_file: " + garbage + ": not a JWKS JSON document"},
		{"jwks empty", JWTConfig{JWKSFile: writeJWKS(t)}, "no usable signing keys"},
		{"jwks dup kid", JWTConfig{JWKSFile: writeJWKS(t, rsaJWK("a", &rsaKey.PublicKey), ecJWK("a", &ecKey.PublicKey))}, `kid "a" is used twice`},
		{"jwks kidless among many", JWTConfig{JWKSFile: writeJWKS(t, rsaJWK("", &rsaKey.PublicKey), ecJWK("a", &ecKey.PublicKey))}, "without \"kid\""},
		{"jwks bad point", JWTConfig{JWKSFile: writeJWKS(t, map[string]string{"kty": "EC", "kid": "e", "crv": "P-256", "x": "AQ", "y": "AQ"})}, "EC point is invalid"},
		{"jwks bad curve", JWTConfig{JWKSFile: writeJWKS(t, map[string]string{"kty": "EC", "kid": "e", "crv": "secp256k1", "x": "AQ", "y": "AQ"})}, "unsupported curve"},
		{"jwks bad rsa", JWTConfig{JWKSFile: writeJWKS(t, map[string]string{"kty": "RSA", "kid": "r", "n": "", "e": "AQAB"})}, `member "n"`},
		{"jwks alg mismatch", JWTConfig{JWKSFile: writeJWKS(t, func() map[string]string {
			k := ecJWK("e", &ecKey.PublicKey)
			k["alg"] = "HS256"
			return k
		}())}, `alg "HS256" does not fit`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewJWT(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestPublicKeyFileFormats(t *testing.T) {
	testKeys(t)
	dir := t.TempDir()
	// PKCS #1 "RSA PUBLIC KEY".
	p1 := filepath.Join(dir, "pkcs1.pem")
	writeFile(t, p1, string(pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&rsaKey.PublicKey)})), 0o644)
	// A self-signed certificate.
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: t0.Add(-time.Hour), NotAfter: t0.Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &ecKey.PublicKey, ecKey)
	if err != nil {
		t.Fatal(err)
	}
	cert := filepath.Join(dir, "cert.pem")
	writeFile(t, cert, "junk before\n"+string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), 0o644)
	for path, tok := range map[string]string{
		p1:   sign(t, jwt.SigningMethodRS256, rsaKey, baseClaims(), ""),
		cert: sign(t, jwt.SigningMethodES256, ecKey, baseClaims(), ""),
	} {
		v := mustJWT(t, JWTConfig{PublicKeyFile: path})
		if _, err := v.Verify(tok, t0); err != nil {
			t.Errorf("%s: %v", filepath.Base(path), err)
		}
	}
}

func TestLooksLikeJWT(t *testing.T) {
	hdr := b64u([]byte(`{"alg":"HS256","typ":"JWT"}`))
	for _, tc := range []struct {
		in   string
		want bool
	}{
		{hdr + ".eyJzdWIiOiJhIn0.c2ln", true},
		{hdr + ".eyJzdWIiOiJhIn0.", true}, // unsigned: still routed to Verify, which refuses it
		{"a.b.c", false},                  // header is not JSON
		{"password", false},
		{"", false},
		{hdr + ".eyJ9", false},                // two segments
		{hdr + ".x.y.z", false},               // four segments
		{hdr + "..sig", false},                // empty payload
		{hdr + ".eyJ9+.sig", false},           // not base64url
		{hdr + "=.eyJ9.sig", false},           // padding
		{b64u([]byte(`[1]`)) + ".a.b", false}, // not an object
	} {
		if got := LooksLikeJWT([]byte(tc.in)); got != tc.want {
			t.Errorf("LooksLikeJWT(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}
