// Command usher is Usher's single binary: the presence gateway (serve, the default), and its tools (token).
package main

import (
	"os"
)

func main() { os.Exit(run(os.Args[1:], os.Getenv, os.Stdout, os.Stderr)) }
