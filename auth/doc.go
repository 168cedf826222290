// Package auth implements Mote's client authentication and authorisation:
// a bcrypt password file, an ordered topic ACL, and JWT verification. It is
// a pure library with no broker dependencies; the broker's mochi hook calls
// it on CONNECT, PUBLISH and SUBSCRIBE.
//
// # Password file
//
// One user per line:
//
//	# comment
//	username:bcrypt-hash
//	username:bcrypt-hash:role1,role2
//
// Blank lines and lines whose first non-blank character is '#' are ignored;
// surrounding white space, a trailing '\r' and a leading UTF-8 BOM are
// stripped. The hash must be a bcrypt hash ($2a$, $2b$ or $2y$, as written by
// HashPassword, SetPassword or "htpasswd -nbB USER PASSWORD") with a cost of
// at most MaxBcryptCost. Roles are comma-separated; a role name may not
// contain ':', ',', white space or control characters. Each username may
// appear once.
//
// Usernames (see ValidateUsername) must be non-empty valid UTF-8 of at most
// 65535 bytes without ':' (the field separator), white space (the ACL file
// separates fields with it), control characters, or the MQTT topic
// characters '+', '#' and '/'. '$' and '%' are allowed; the ACL's
// placeholder rules below make them harmless.
//
// Errors name the file and line and say how to fix the problem, e.g.
//
//	passwd:4: user "bob": password hash is not a bcrypt hash (...)
//
// Users.Check runs bcrypt even for unknown usernames (against a dummy hash
// of the file's highest cost), so timing does not reveal which users exist.
// Passwords longer than 72 bytes (bcrypt's limit) never match and are
// refused by HashPassword. SetPassword and DeleteUser edit the file in
// place, keeping every other line and comment byte for byte and the user's
// roles, via an atomic temp-file-and-rename; a new file is created with mode
// 0600, an existing one keeps its mode.
//
// # ACL file
//
// One rule per line:
//
//	allow|deny  SUBJECT  ACTION  TOPIC
//
//	SUBJECT  any | anonymous | user NAME | role NAME
//	ACTION   pub | publish | sub | subscribe | all | pubsub
//	TOPIC    an MQTT topic filter (the rest of the line, trimmed)
//
// for example
//
//	# operators can read broker statistics
//	allow role ops       sub  $SYS/#
//	deny  anonymous      all  #
//	allow user alice     pub  sensors/%u/#
//	allow any            all  devices/%u/#
//	allow any            sub  $share/%u/jobs/#
//
// Comments and blank lines are as in the password file ('#' only starts a
// comment at the beginning of a line, since it is also the MQTT wildcard).
// Errors look like "acl.conf:3: topic "a/#/b": '#' must be the last level
// (...)". NewACL reports the same problems for rules built in code as
// "acl rule 3: ...".
//
// A "user" rule matches an authenticated (non-anonymous) client with that
// exact username; a "role" rule one holding the role (from the password file
// or the JWT roles claim); "anonymous" matches only anonymous clients; "any"
// matches every client.
//
// # Evaluation
//
// Rules are evaluated in file order and the first rule that decides wins.
// With no rules at all (Empty), every valid publish and subscribe is
// allowed, including "$SYS/#": no ACL means an open broker. As soon as one
// rule exists, a request that no rule decides is denied. Put specific deny
// rules before broad allow rules: "allow any all a/#" followed by
// "deny any all a/secret" still allows a/secret.
//
// Publishing to a concrete topic: the first rule (with the pub action, for
// the client) whose pattern matches the topic decides.
//
// Subscribing to a filter is decided by the set of topics the filter can
// deliver, so a wildcard subscription can never read a topic that publishing
// rules or a narrower subscription would refuse:
//
//   - an allow rule decides (allow) only if its pattern covers every topic
//     the filter matches: pattern "devices/%u/#" allows "devices/bob/+/temp"
//     for bob but not "devices/#" nor "#". An allow rule that covers the
//     filter only partly does not decide; evaluation continues.
//   - a deny rule decides (deny) if its pattern and the filter have any
//     topic in common. The subscription is refused, not narrowed.
//
// For a concrete topic this is the same as ordinary matching, so with "all"
// rules subscribing to topic T and publishing to T get the same answer.
//
// # Topic matching
//
// Patterns and filters follow MQTT 3.1.1/5.0 section 4.7 exactly:
//
//   - "+" matches exactly one level, which may be empty: "a/+" matches "a/b"
//     and "a/" but not "a" or "a/b/c";
//   - "#" must be the last level and matches the parent and any depth: "a/#"
//     matches "a", "a/b" and "a/b/c";
//   - a pattern or filter starting with "+" or "#" does not match topics
//     whose first level starts with '$' [MQTT-4.7.2-1]; "$SYS/#" must be
//     granted explicitly.
//
// Invalid topics and filters (empty, NUL, invalid UTF-8, misplaced
// wildcards, wildcards in a publish topic) are always refused.
//
// # Placeholders
//
// "%u" is replaced by the username and "%c" by the client id, as whole levels
// ("devices/%u/#") or inside a level ("logs/%c-out"), in a single pass. Any
// other '%' is literal. A rule (or token scope) using a placeholder does not
// match at all when the value is empty or contains '+', '#', '/' or NUL, so
// a client cannot widen a pattern by choosing a wildcard identity
// (CVE-2017-7650); anonymous clients never match "%u" rules. It also does
// not match when substitution would make the first level start with '$'
// although the pattern's does not (a user named "$SYS" cannot turn "%u/#"
// into "$SYS/#").
//
// # Shared subscriptions
//
// A subscription "$share/GROUP/FILTER" is allowed only if
//
//  1. FILTER is allowed as an ordinary subscription (every rule except the
//     $share rules, and the token scope), and
//  2. if the ACL contains any rule whose topic starts with "$share/", the
//     whole "$share/GROUP/FILTER" passes the same subscribe evaluation
//     against those $share rules only. With no $share rules every group is
//     allowed.
//
// So $share rules control which groups a client may join, and for which
// filters: "allow role workers sub $share/workers/jobs/#" lets workers join
// group "workers" for filters under jobs/; "allow any sub $share/%u/#" lets
// every client use a group named after itself; "$share/+/#" or "$share/#"
// means any group. A $share rule must have the form "$share/GROUP/FILTER" or
// be "$share/#", and applies to subscribe only (a "pub" $share rule is an
// error; "all" is accepted and its publish half ignored). The group in a
// subscription must be non-empty and contain no wildcard. $share rules are
// ignored for publishing, and publishing to a topic starting with "$share/"
// is refused whenever the ACL has rules.
//
// # JWT
//
// A client may present a JWT (compact JWS) as its MQTT password;
// LooksLikeJWT tells it apart from ordinary passwords (three base64url
// segments whose header decodes to a JSON object). JWTVerifier checks it
// against exactly one key source: an HS256 secret (at least 32 bytes), a PEM
// public key file (RSA ≥ 2048 bits: RS256/384/512, PS256/384/512; EC P-256:
// ES256, P-384: ES384, P-521: ES512; Ed25519: EdDSA), or a JWKS file whose
// keys are chosen by the token's "kid" (a JWK "alg" further restricts its
// key). The token's algorithm must fit the key, so "none" and HS/RS
// confusion are impossible. exp and nbf are honoured with Leeway; exp is
// optional unless RequireExpiry is set; iss and aud are checked when
// configured.
//
// Claims (names configurable): "sub" is the username (required); "roles" is
// an array of role names (or one space/comma-separated string); "publish"
// and "subscribe" are arrays of topic filters forming a token scope. When a
// scope claim is present (even empty), the action must also be allowed by
// the scope, with the same subset semantics as the ACL (a subscription
// filter must be covered entirely by one scope filter; scope filters may
// use %u and %c). The ACL still applies on top. For shared subscriptions
// the scope is checked against FILTER.
package auth
