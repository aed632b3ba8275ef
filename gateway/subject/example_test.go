package subject_test

import (
	"fmt"

	"github.com/usher-presence/usher/gateway/subject"
)

func ExampleEncode() {
	fmt.Println(subject.Encode("show-1"))
	fmt.Println(subject.Encode("a.>"))
	fmt.Println(subject.NCS("Room 7"))
	ch, err := subject.ChannelOf("usher.presence.a%2E%3E")
	fmt.Println(ch, err)
	_, err = subject.Decode("a%2e")
	fmt.Println(err)
	// Output:
	// show-1
	// a%2E%3E
	// usher.ncs.Room%207
	// a.> <nil>
	// not a canonical channel token
}
