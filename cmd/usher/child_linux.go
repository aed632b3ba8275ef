package main

import "syscall"

// childAttr makes a spawned server get SIGTERM when the bench dies, even by SIGKILL, so that none is left running.
func childAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM} }
