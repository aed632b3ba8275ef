package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/usher-presence/usher/gateway/bus"
)

// settings registers flags whose defaults come from environment variables, so that a flag wins over its variable,
// which wins over the built-in default. Secrets may also come from a file named by NAME_FILE.
type settings struct {
	fs      *flag.FlagSet
	getenv  func(string) string
	envErrs []flagError     // bad environment values, in the order registered: moot when the flag is given
	redact  map[string]bool // flags whose default, from the environment, help must not show as it is
}

type flagError struct {
	flag string
	err  error
}

func newSettings(name string, getenv func(string) string, stderr io.Writer) *settings {
	fs := flag.NewFlagSet("usher "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return &settings{fs: fs, getenv: getenv}
}

// env is the value of an environment variable.
func (s *settings) env(name string) (string, bool) {
	v := s.getenv(name)
	return v, v != ""
}

// help is a setting's help text. The flag package adds "(default X)" with the value in effect (the environment
// variable's, when it is set), so the built-in default is given here only when the variable is set.
func help(text, env, def string, envSet bool) string {
	h := text + " (env " + env
	if envSet && def != "" {
		h += ", built-in default " + def
	}
	return h + ")"
}

func (s *settings) String(p *string, flagName, env, def, text string) {
	v, ok := s.env(env)
	if !ok {
		v = def
	}
	s.fs.StringVar(p, flagName, v, help(text, env, def, ok))
}

// URLs is a String setting of URLs that may carry credentials (user:password@): help shows them redacted.
func (s *settings) URLs(p *string, flagName, env, def, text string) {
	s.String(p, flagName, env, def, text)
	if f := s.fs.Lookup(flagName); f != nil {
		f.DefValue = bus.RedactURLs(f.DefValue)
	}
}

// envError records a bad environment value for flagName; Parse reports it unless the flag itself is given.
func (s *settings) envError(flagName string, err error) {
	s.envErrs = append(s.envErrs, flagError{flagName, err})
}

// Secret is a string setting that also reads NAME_FILE and never shows its value in help.
func (s *settings) Secret(p *string, flagName, env, text string) {
	v, _ := s.env(env)
	if path := s.getenv(env + "_FILE"); v == "" && path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			s.envError(flagName, fmt.Errorf("%s_FILE: %w", env, err))
		}
		v = strings.TrimSpace(string(b))
	}
	*p = v
	s.fs.Func(flagName, text+" (env "+env+" or "+env+"_FILE; prefer those to a flag, which shows in ps)", func(x string) error {
		*p = x
		return nil
	})
}

func (s *settings) Int(p *int, flagName, env string, def int, text string) {
	v := def
	raw, ok := s.env(env)
	if ok {
		n, err := strconv.Atoi(raw)
		if err != nil {
			s.envError(flagName, fmt.Errorf("%s=%q is not a whole number", env, raw))
		}
		v = n
	}
	s.fs.IntVar(p, flagName, v, help(text, env, strconv.Itoa(def), ok))
}

func (s *settings) Duration(p *time.Duration, flagName, env string, def time.Duration, text string) {
	v := def
	raw, ok := s.env(env)
	if ok {
		d, err := time.ParseDuration(raw)
		if err != nil {
			s.envError(flagName, fmt.Errorf("%s=%q is not a duration (e.g. 90s, 10m, 2h)", env, raw))
		}
		v = d
	}
	s.fs.DurationVar(p, flagName, v, help(text, env, def.String(), ok))
}

func (s *settings) Float(p *float64, flagName, env string, def float64, text string) {
	v := def
	raw, ok := s.env(env)
	if ok {
		f, err := strconv.ParseFloat(raw, 64)
		if err != nil {
			s.envError(flagName, fmt.Errorf("%s=%q is not a number", env, raw))
		}
		v = f
	}
	s.fs.Float64Var(p, flagName, v, help(text, env, strconv.FormatFloat(def, 'g', -1, 64), ok))
}

func (s *settings) Bool(p *bool, flagName, text string) { s.fs.BoolVar(p, flagName, false, text) }

// Parse parses args and reports the first bad environment variable or flag in one line.
func (s *settings) Parse(args []string) error {
	if err := s.fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	given := map[string]bool{}
	s.fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	for _, e := range s.envErrs {
		if !given[e.flag] { // the flag wins over its variable, even a bad one
			return e.err
		}
	}
	if s.fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", s.fs.Arg(0))
	}
	return nil
}

// splitSecrets splits a list of secrets given comma-separated or one per line (as a NAME_FILE often holds them),
// dropping blanks.
func splitSecrets(s string) []string {
	var out []string
	for _, p := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == '\n' || r == '\r' }) {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// splitList splits a comma-separated list, dropping blanks.
func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
