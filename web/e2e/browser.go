// Package e2e drives Usher's web console in a real headless Chromium with chromedp: the console's end-to-end test,
// and consoleshot, the tool that takes README's screenshot. No browser is downloaded: it is Debian's chromium
// package (.ci/run installs it when missing).
package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
)

// ChromiumPath is where Debian's chromium package installs the browser. The environment variable USHER_CHROMIUM
// names another binary.
const ChromiumPath = "/usr/bin/chromium"

// Chromium returns the browser binary to run, or an error saying how to install it.
func Chromium() (string, error) {
	path := ChromiumPath
	if p := os.Getenv("USHER_CHROMIUM"); p != "" {
		path = p
	}
	if _, err := os.Stat(path); err != nil {
		return "", fmt.Errorf("no browser at %s (install Debian's chromium: apt-get install -y chromium, or set USHER_CHROMIUM): %w", path, err)
	}
	return path, nil
}

// AllocatorOptions are chromedp's defaults (headless, no first-run, no background networking, no sync) plus what
// a container needs: no sandbox, no GPU, no QUIC, no component updates, and a fresh profile in profileDir.
func AllocatorOptions(execPath, profileDir string, width, height int) []chromedp.ExecAllocatorOption {
	opts := append([]chromedp.ExecAllocatorOption{}, chromedp.DefaultExecAllocatorOptions[:]...)
	return append(opts,
		chromedp.ExecPath(execPath),
		chromedp.UserDataDir(profileDir),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.WindowSize(width, height),
	)
}

// ColorScheme makes the page see prefers-color-scheme: scheme ("dark" or "light").
func ColorScheme(scheme string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := cdp.Call(ctx, t, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
			Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: scheme}},
		})
		return err
	})
}

// Screenshot saves what the viewport shows as a PNG file at path.
func Screenshot(path string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		png, err := chromedp.CaptureScreenshot()(ctx, t)
		if err != nil {
			return fmt.Errorf("screenshot %s: %w", filepath.Base(path), err)
		}
		return os.WriteFile(path, png, 0o644)
	})
}
