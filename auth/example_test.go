package auth_test

import (
	"fmt"
	"time"

	"github.com/usher-presence/usher/auth"
)

func ExampleIssue() {
	const secret = "a long random secret"
	token, err := auth.Issue(secret, []string{"show-*", "lobby"}, time.Hour, "moderator-7")
	if err != nil {
		fmt.Println(err)
		return
	}
	claims, err := auth.NewVerifier(secret).Verify(token)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(claims.Subject, claims.Channels)
	fmt.Println(claims.Channels.Allows("show-1"), claims.Channels.Allows("lobby"), claims.Channels.Allows("shows"))

	_, err = auth.NewVerifier("another secret").Verify(token)
	fmt.Println(err)
	// Output:
	// moderator-7 [show-* lobby]
	// true true false
	// invalid token: bad signature or algorithm
}
