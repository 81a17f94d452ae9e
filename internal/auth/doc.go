// Package auth owns token verification for presenced: it turns the compact
// JWT a client presents into the [Claims] the server acts on (who the user is,
// until when, and which rooms they may join), and it owns the room glob
// syntax of the `rooms` claim ([Match]).
//
// A [Verifier] is built once from a [Config] holding exactly one key: an
// HS256 secret, or a PEM public key (RSA for RS256, ECDSA P-256 for ES256).
// The key decides the one signing algorithm a token may use; every other
// algorithm, "none" included, is refused, so a token cannot pick its own
// verification method (no HS256 signed with the RSA public key as secret).
//
// A token is accepted when its signature verifies and its claims hold:
//
//   - exp is present and in the future (Config.Leeway of clock skew allowed,
//     DefaultLeeway unless set);
//   - nbf and iat, when present, are not in the future (same leeway);
//   - sub is 1–128 bytes of [A-Za-z0-9._:@/-];
//   - iss equals Config.Issuer and aud contains Config.Audience, when set;
//   - rooms, when present, is a JSON array of strings, each a glob pattern
//     of [Match]. Absent means every room; an empty array means none;
//     null or any other type is invalid.
//
// Every error of [Verifier.Verify] wraps [ErrInvalidToken] with a short
// reason ("auth: invalid token: wrong issuer"). A token whose only fault is
// an exp in the past returns [ErrExpired], which wraps ErrInvalidToken too,
// so callers can tell "log in again" apart from "rejected".
//
// Usage:
//
//	v, err := auth.New(auth.Config{
//		PublicKeyPEM: pemBytes, // or HS256Secret: secret
//		Issuer:       "https://login.example.com",
//		Audience:     "presenced",
//		Leeway:       30 * time.Second,
//	})
//	if err != nil {
//		return err // configuration error: no key, two keys, bad PEM, ...
//	}
//	claims, err := v.Verify(token)
//	switch {
//	case errors.Is(err, auth.ErrExpired):
//		// ask the client to refresh its token
//	case err != nil:
//		// reject
//	case !claims.Allows("chat:42"):
//		// authenticated, but not allowed in this room
//	}
//
// Concurrency: a Verifier is immutable after New and safe for concurrent use
// by any number of goroutines; Verify parses no key and takes no lock.
// Claims values are not shared by the package: each Verify returns a fresh
// one, safe to read concurrently. Match is a pure function. The package has
// no mutable state and starts no goroutine.
package auth
