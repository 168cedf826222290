package auth

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// MinHMACSecretLen is the shortest HS256 secret NewJWT accepts (256 bits,
// RFC 7518 section 3.2).
const MinHMACSecretLen = 32

// minRSABits is the smallest RSA modulus accepted for RS*/PS* tokens.
const minRSABits = 2048

// maxTokenLen bounds the size of a token Verify will parse.
const maxTokenLen = 16 << 10

// JWTConfig configures a JWTVerifier. Exactly one of Secret, PublicKeyFile
// and JWKSFile must be set.
type JWTConfig struct {
	Secret        string // HS256 shared secret (at least 32 bytes), or
	PublicKeyFile string // PEM RSA, EC or Ed25519 public key (or certificate), or
	JWKSFile      string // JWKS JSON file (keys chosen by the token's kid)

	Issuer, Audience string // optional "iss" / "aud" checks

	UsernameClaim                string // default "sub"
	PublishClaim, SubscribeClaim string // default "publish", "subscribe" (arrays of topic filters)
	RolesClaim                   string // default "roles"

	Leeway time.Duration // clock skew allowed for exp and nbf

	// RequireExpiry refuses tokens without an "exp" claim. Without it,
	// such tokens never expire (Identity.Expires is zero).
	RequireExpiry bool
}

// verificationKey is one key a token may be signed with, plus the
// algorithms that are legal for it.
type verificationKey struct {
	key  any      // []byte, *rsa.PublicKey, *ecdsa.PublicKey or ed25519.PublicKey
	algs []string // algorithms this key type may verify
}

// JWTVerifier checks JWTs presented as MQTT passwords. It is immutable and
// safe for concurrent use.
type JWTVerifier struct {
	cfg    JWTConfig
	single *verificationKey            // Secret or PublicKeyFile
	byKid  map[string]*verificationKey // JWKSFile
	algs   []string                    // union of every key's algorithms
}

// NewJWT validates cfg, loads the key material and fills in claim-name
// defaults. Errors name the configuration field, e.g.
// "auth.jwt.public_key_file: ...".
func NewJWT(cfg JWTConfig) (*JWTVerifier, error) {
	var set []string
	if cfg.Secret != "" {
		set = append(set, "secret")
	}
	if cfg.PublicKeyFile != "" {
		set = append(set, "public_key_file")
	}
	if cfg.JWKSFile != "" {
		set = append(set, "jwks_file")
	}
	if len(set) != 1 {
		got := "none"
		if len(set) > 1 {
			got = strings.Join(set, ", ")
		}
		return nil, fmt.Errorf("auth.jwt: set exactly one of secret, public_key_file or jwks_file (got %s)", got)
	}
	if cfg.Leeway < 0 {
		return nil, fmt.Errorf("auth.jwt.leeway: %v is negative; use 0 or a small positive duration such as 30s", cfg.Leeway)
	}
	defaults := []struct {
		field *string
		def   string
	}{
		{&cfg.UsernameClaim, "sub"},
		{&cfg.PublishClaim, "publish"},
		{&cfg.SubscribeClaim, "subscribe"},
		{&cfg.RolesClaim, "roles"},
	}
	for _, d := range defaults {
		if *d.field == "" {
			*d.field = d.def
		}
	}

	v := &JWTVerifier{cfg: cfg}
	switch {
	case cfg.Secret != "":
		if len(cfg.Secret) < MinHMACSecretLen {
			return nil, fmt.Errorf("auth.jwt.secret: too short (%d bytes); HS256 needs at least %d random bytes, e.g. from: openssl rand -base64 32", len(cfg.Secret), MinHMACSecretLen)
		}
		v.single = &verificationKey{key: []byte(cfg.Secret), algs: []string{"HS256"}}
	case cfg.PublicKeyFile != "":
		k, err := loadPublicKeyFile(cfg.PublicKeyFile)
		if err != nil {
			return nil, fmt.Errorf("auth.jwt.public_key_file: %w", err)
		}
		v.single = k
	default:
		keys, err := loadJWKSFile(cfg.JWKSFile)
		if err != nil {
			return nil, fmt.Errorf("auth.jwt.jwks_file: %w", err)
		}
		v.byKid = keys
	}
	seen := map[string]bool{}
	add := func(k *verificationKey) {
		for _, a := range k.algs {
			if !seen[a] {
				seen[a] = true
				v.algs = append(v.algs, a)
			}
		}
	}
	if v.single != nil {
		add(v.single)
	}
	for _, k := range v.byKid {
		add(k)
	}
	return v, nil
}

// keyForPublic wraps a parsed public key with the algorithms legal for it.
// The algorithm is tied to the key type, which rules out "none" and HS/RS
// confusion: an HMAC token can never be checked against a public key.
func keyForPublic(pub crypto.PublicKey) (*verificationKey, error) {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < minRSABits {
			return nil, fmt.Errorf("RSA key is %d bits; use at least %d", k.N.BitLen(), minRSABits)
		}
		return &verificationKey{key: k, algs: []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}}, nil
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return &verificationKey{key: k, algs: []string{"ES256"}}, nil
		case elliptic.P384():
			return &verificationKey{key: k, algs: []string{"ES384"}}, nil
		case elliptic.P521():
			return &verificationKey{key: k, algs: []string{"ES512"}}, nil
		}
		return nil, errors.New("unsupported EC curve; use P-256 (ES256), P-384 or P-521")
	case ed25519.PublicKey:
		return &verificationKey{key: k, algs: []string{"EdDSA"}}, nil
	}
	return nil, fmt.Errorf("unsupported key type %T; use an RSA, EC or Ed25519 public key", pub)
}

// loadPublicKeyFile reads a PEM "PUBLIC KEY" (PKIX), "RSA PUBLIC KEY"
// (PKCS #1) or "CERTIFICATE" block.
func loadPublicKeyFile(path string) (*verificationKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	rest := data
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, fmt.Errorf("%s: no PEM public key found; expected a \"-----BEGIN PUBLIC KEY-----\" block (e.g. from: openssl pkey -pubout -in key.pem)", path)
		}
		var pub crypto.PublicKey
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
		case "PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY", "OPENSSH PRIVATE KEY":
			return nil, fmt.Errorf("%s: contains a private key; give the broker only the public key (openssl pkey -pubout -in key.pem)", path)
		default:
			continue // skip e.g. "EC PARAMETERS"
		}
		if err != nil {
			return nil, fmt.Errorf("%s: parsing %s: %w", path, block.Type, err)
		}
		k, err := keyForPublic(pub)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return k, nil
	}
}

// jwk is the subset of RFC 7517/7518 key members this package uses.
type jwk struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Use string `json:"use"`
	Alg string `json:"alg"`
	N   string `json:"n"`
	E   string `json:"e"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Y   string `json:"y"`
}

// loadJWKSFile reads a JWK Set. RSA, EC (P-256/384/521) and OKP Ed25519
// keys are used; keys of other types and encryption keys (use "enc") are
// skipped. Kids must be unique; a key without kid is only allowed when it is
// the only key. If a key names its "alg", only that algorithm is accepted.
func loadJWKSFile(path string) (map[string]*verificationKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(data, &set); err != nil {
		return nil, fmt.Errorf("%s: not a JWKS JSON document (%v); expected {\"keys\": [...]}", path, err)
	}
	keys := map[string]*verificationKey{}
	for i, raw := range set.Keys {
		var j jwk
		if err := json.Unmarshal(raw, &j); err != nil {
			return nil, fmt.Errorf("%s: keys[%d]: %v", path, i, err)
		}
		if j.Use != "" && j.Use != "sig" {
			continue
		}
		var pub crypto.PublicKey
		switch j.Kty {
		case "RSA":
			pub, err = j.rsa()
		case "EC":
			pub, err = j.ec()
		case "OKP":
			pub, err = j.okp()
		default:
			continue // "oct" and unknown types are not used for verification
		}
		if err == nil && pub == nil {
			continue // e.g. an OKP X25519 key
		}
		var k *verificationKey
		if err == nil {
			k, err = keyForPublic(pub)
		}
		if err == nil && j.Alg != "" {
			if !slices.Contains(k.algs, j.Alg) {
				err = fmt.Errorf("alg %q does not fit a %s key (use one of %s)", j.Alg, j.Kty, strings.Join(k.algs, ", "))
			}
			k.algs = []string{j.Alg}
		}
		if err != nil {
			return nil, fmt.Errorf("%s: keys[%d] (kid %q): %w", path, i, j.Kid, err)
		}
		if _, dup := keys[j.Kid]; dup {
			return nil, fmt.Errorf("%s: keys[%d]: kid %q is used twice; every key needs a unique kid", path, i, j.Kid)
		}
		keys[j.Kid] = k
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%s: no usable signing keys (RSA, EC or Ed25519)", path)
	}
	if _, ok := keys[""]; ok && len(keys) > 1 {
		return nil, fmt.Errorf("%s: a key without \"kid\" is only allowed when it is the only key; give every key a kid", path)
	}
	return keys, nil
}

// b64int decodes a base64url big-endian unsigned integer member.
func b64int(name, s string) (*big.Int, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) == 0 {
		return nil, fmt.Errorf("member %q is missing or not base64url", name)
	}
	return new(big.Int).SetBytes(b), nil
}

func (j jwk) rsa() (crypto.PublicKey, error) {
	n, err := b64int("n", j.N)
	if err != nil {
		return nil, err
	}
	e, err := b64int("e", j.E)
	if err != nil {
		return nil, err
	}
	if !e.IsInt64() || e.Int64() < 3 || e.Int64() > 1<<31-1 || e.Bit(0) == 0 {
		return nil, errors.New("RSA exponent \"e\" is invalid")
	}
	return &rsa.PublicKey{N: n, E: int(e.Int64())}, nil
}

func (j jwk) ec() (crypto.PublicKey, error) {
	var curve elliptic.Curve
	switch j.Crv {
	case "P-256":
		curve = elliptic.P256()
	case "P-384":
		curve = elliptic.P384()
	case "P-521":
		curve = elliptic.P521()
	default:
		return nil, fmt.Errorf("unsupported curve %q; use P-256, P-384 or P-521", j.Crv)
	}
	size := (curve.Params().BitSize + 7) / 8
	x, err := b64int("x", j.X)
	if err != nil {
		return nil, err
	}
	y, err := b64int("y", j.Y)
	if err != nil {
		return nil, err
	}
	// Validate the point via the uncompressed SEC 1 encoding, which checks
	// it is on the curve.
	enc := make([]byte, 1+2*size)
	enc[0] = 4
	if len(x.Bytes()) > size || len(y.Bytes()) > size {
		return nil, errors.New("EC point coordinates are too long for the curve")
	}
	x.FillBytes(enc[1 : 1+size])
	y.FillBytes(enc[1+size:])
	pub, err := ecdsa.ParseUncompressedPublicKey(curve, enc)
	if err != nil {
		return nil, fmt.Errorf("EC point is invalid: %w", err)
	}
	return pub, nil
}

func (j jwk) okp() (crypto.PublicKey, error) {
	if j.Crv != "Ed25519" {
		return nil, nil // X25519 etc. cannot sign
	}
	b, err := base64.RawURLEncoding.DecodeString(j.X)
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil, errors.New("Ed25519 member \"x\" must be 32 base64url-encoded bytes")
	}
	return ed25519.PublicKey(b), nil
}

// keyFunc picks the verification key for t and checks that t's algorithm is
// legal for that key.
func (v *JWTVerifier) keyFunc(t *jwt.Token) (any, error) {
	k := v.single
	if k == nil {
		kid, _ := t.Header["kid"].(string)
		var ok bool
		if k, ok = v.byKid[kid]; !ok {
			if kid == "" {
				return nil, errors.New("token has no \"kid\" header and the JWKS has several keys")
			}
			return nil, fmt.Errorf("unknown kid %q", kid)
		}
	}
	alg := t.Method.Alg()
	if !slices.Contains(k.algs, alg) {
		return nil, fmt.Errorf("algorithm %q is not allowed for this key (allowed: %s)", alg, strings.Join(k.algs, ", "))
	}
	return k.key, nil
}

// Verify checks the token's signature and claims at time now and returns
// the identity it carries: Username (from UsernameClaim, required), Roles,
// TokenPublish/TokenSubscribe (nil when the claim is absent) and Expires.
// The algorithm must match the key type ("none" is never accepted); exp and
// nbf are honoured with the configured leeway; iss and aud are checked when
// configured. ClientID is left for the caller to fill in.
func (v *JWTVerifier) Verify(token string, now time.Time) (Identity, error) {
	if len(token) > maxTokenLen {
		return Identity{}, fmt.Errorf("jwt: token is %d bytes, more than the %d allowed", len(token), maxTokenLen)
	}
	opts := []jwt.ParserOption{
		jwt.WithValidMethods(v.algs),
		jwt.WithTimeFunc(func() time.Time { return now }),
		jwt.WithLeeway(v.cfg.Leeway),
		jwt.WithStrictDecoding(),
	}
	if v.cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(v.cfg.Issuer))
	}
	if v.cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(v.cfg.Audience))
	}
	if v.cfg.RequireExpiry {
		opts = append(opts, jwt.WithExpirationRequired())
	}
	claims := jwt.MapClaims{}
	if _, err := jwt.NewParser(opts...).ParseWithClaims(token, claims, v.keyFunc); err != nil {
		return Identity{}, fmt.Errorf("jwt: %w", err)
	}

	var id Identity
	user, ok := claims[v.cfg.UsernameClaim].(string)
	if !ok || user == "" {
		return Identity{}, fmt.Errorf("jwt: claim %q (the username) is missing or not a non-empty string", v.cfg.UsernameClaim)
	}
	id.Username = user
	var err error
	if id.Roles, err = stringList(claims, v.cfg.RolesClaim, false); err != nil {
		return Identity{}, err
	}
	if id.TokenPublish, err = stringList(claims, v.cfg.PublishClaim, true); err != nil {
		return Identity{}, err
	}
	if id.TokenSubscribe, err = stringList(claims, v.cfg.SubscribeClaim, true); err != nil {
		return Identity{}, err
	}
	if exp, err := claims.GetExpirationTime(); err == nil && exp != nil {
		id.Expires = exp.Time
	}
	return id, nil
}

// stringList reads a claim that is an array of strings (or a single
// string, or for roles a space/comma-separated string). It returns nil when
// the claim is absent and a non-nil slice otherwise. With filters set, every
// entry must be a valid MQTT topic filter.
func stringList(claims jwt.MapClaims, name string, filters bool) ([]string, error) {
	raw, present := claims[name]
	if !present || raw == nil {
		return nil, nil
	}
	out := []string{}
	switch x := raw.(type) {
	case string:
		if filters {
			out = append(out, x)
		} else {
			out = append(out, strings.FieldsFunc(x, func(r rune) bool { return r == ' ' || r == ',' })...)
		}
	case []any:
		for i, e := range x {
			s, ok := e.(string)
			if !ok {
				return nil, fmt.Errorf("jwt: claim %q[%d] is %T; it must be an array of strings", name, i, e)
			}
			out = append(out, s)
		}
	default:
		return nil, fmt.Errorf("jwt: claim %q is %T; it must be an array of strings", name, raw)
	}
	if filters {
		for i, f := range out {
			if err := validateFilter(f); err != nil {
				return nil, fmt.Errorf("jwt: claim %q[%d] %q is not a valid topic filter: %v", name, i, f, err)
			}
		}
	}
	return out, nil
}

// LooksLikeJWT reports whether password has the shape of a compact JWS:
// three '.'-separated base64url segments (header and payload non-empty)
// whose header decodes to a JSON object. The header check keeps ordinary
// passwords such as "a.b.c" on the password-file path.
func LooksLikeJWT(password []byte) bool {
	if len(password) > maxTokenLen || bytes.Count(password, []byte(".")) != 2 {
		return false
	}
	parts := bytes.SplitN(password, []byte("."), 3)
	if len(parts[0]) == 0 || len(parts[1]) == 0 {
		return false
	}
	for _, p := range parts {
		for _, c := range p {
			if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	hdr, err := base64.RawURLEncoding.DecodeString(string(parts[0]))
	if err != nil {
		return false
	}
	hdr = bytes.TrimSpace(hdr)
	return len(hdr) > 0 && hdr[0] == '{' && json.Valid(hdr)
}
