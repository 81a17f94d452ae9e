package auth_test

import (
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/presenced/presenced/internal/auth"
)

func ExampleVerifier_Verify() {
	secret := []byte("0123456789abcdef0123456789abcdef")
	now := time.Unix(1_700_000_000, 0)
	v, err := auth.New(auth.Config{
		HS256Secret: secret,
		Audience:    "presenced",
		Now:         func() time.Time { return now },
	})
	if err != nil {
		panic(err)
	}

	// What an identity provider would issue.
	token, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub":   "user-1",
		"aud":   "presenced",
		"exp":   now.Add(time.Hour).Unix(),
		"rooms": []string{"chat:*"},
	}).SignedString(secret)

	claims, err := v.Verify(token)
	if err != nil {
		panic(err)
	}
	fmt.Println(claims.Subject, claims.Allows("chat:42"), claims.Allows("doc:42"))

	old, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": "user-1",
		"aud": "presenced",
		"exp": now.Add(-time.Minute).Unix(),
	}).SignedString(secret)
	_, err = v.Verify(old)
	fmt.Println(err, errors.Is(err, auth.ErrExpired), errors.Is(err, auth.ErrInvalidToken))
	// Output:
	// user-1 true false
	// auth: invalid token: expired true true
}

func ExampleMatch() {
	fmt.Println(auth.Match("chat:*", "chat:42"))
	fmt.Println(auth.Match("chat:*:x", "chat:a:b:x"))
	fmt.Println(auth.Match("doc:?", "doc:42"))
	// Output:
	// true
	// true
	// false
}
