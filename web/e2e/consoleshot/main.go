// Command consoleshot takes a screenshot of Usher's console in headless Chromium: README's docs/console.png.
//
//	go run ./cmd/usher serve --demo --port 18080      # prints a console link with #token=...
//	go run ./web/e2e/consoleshot -url 'http://localhost:18080/#token=...' -out docs/console.png
//
// It opens the link, opens the busiest channels of the picker, lets the demo feed run for a while so that the
// chart and the activity feed fill up, and saves the viewport as a PNG.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/usher-presence/usher/web/e2e"
)

func main() { os.Exit(run(os.Args[1:], os.Stderr)) }

func run(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("consoleshot", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("url", "", "console link, with #token=...")
	out := fs.String("out", "console.png", "PNG file to write")
	width := fs.Int("width", 1440, "viewport width")
	height := fs.Int("height", 900, "viewport height")
	scheme := fs.String("scheme", "dark", "prefers-color-scheme: dark or light")
	open := fs.Int("open", 1, "how many of the busiest channels to open")
	names := fs.String("channels", "", "comma-separated channels to open instead of the busiest")
	layout := fs.String("layout", "tabs", "tabs or grid (side by side)")
	wait := fs.Duration("wait", 30*time.Second, "how long to let the feed run before the screenshot")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *url == "" {
		fmt.Fprintln(stderr, "consoleshot: -url is required (the console link usher serve --demo prints)")
		return 2
	}
	var list []string
	if *names != "" {
		list = strings.Split(*names, ",")
	}
	if err := shoot(*url, *out, *width, *height, *scheme, *open, list, *layout, *wait); err != nil {
		fmt.Fprintln(stderr, "consoleshot:", err)
		return 1
	}
	return 0
}

func shoot(url, out string, width, height int, scheme string, open int, names []string, layout string, wait time.Duration) error {
	chromium, err := e2e.Chromium()
	if err != nil {
		return err
	}
	profile, err := os.MkdirTemp("", "consoleshot-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(profile)
	ctx, cancel := context.WithTimeout(context.Background(), wait+2*time.Minute)
	defer cancel()
	actx, acancel := chromedp.NewExecAllocator(ctx, e2e.AllocatorOptions(chromium, profile, width, height)...)
	defer acancel()
	bctx, bcancel := chromedp.NewContext(actx)
	defer bcancel()

	if err := chromedp.Do(bctx,
		chromedp.EmulateViewport(int64(width), int64(height)),
		e2e.ColorScheme(scheme),
		chromedp.Navigate(url),
		chromedp.WaitVisible(chromedp.CSS("#app")),
	); err != nil {
		return fmt.Errorf("open the console: %w", err)
	}
	if layout == "grid" {
		if err := chromedp.Do(bctx, chromedp.Click(chromedp.CSS(`#layout [data-layout="grid"]`))); err != nil {
			return err
		}
	}
	// Open the busiest channels: the picker lists them first.
	n, err := chromedp.Run(bctx, chromedp.Poll[int](`document.querySelectorAll("#channel-list li[data-channel] .cl-counts").length`,
		chromedp.WithPollingTimeout(time.Minute)))
	if err != nil {
		return fmt.Errorf("wait for the channel list: %w", err)
	}
	var clicks []string
	for _, name := range names {
		q, _ := json.Marshal(name)
		clicks = append(clicks, fmt.Sprintf(`document.querySelector("#open-input").value = %s; document.querySelector("#open-form").requestSubmit()`, q))
	}
	if len(names) == 0 {
		for i := range min(open, n) {
			clicks = append(clicks, fmt.Sprintf(`document.querySelectorAll("#channel-list li[data-channel] button")[%d].click()`, i))
		}
	}
	for _, js := range clicks {
		if err := chromedp.Do(bctx, chromedp.Evaluate[chromedp.Void](js)); err != nil {
			return fmt.Errorf("open a channel: %w", err)
		}
	}
	if len(clicks) > 1 {
		if err := chromedp.Do(bctx, chromedp.Evaluate[chromedp.Void](`document.querySelector("#tabs .tab").click()`)); err != nil {
			return err
		}
	}
	select { // a tool, not a test: let the demo feed fill the chart and the feed
	case <-time.After(wait):
	case <-ctx.Done():
		return errors.New("timed out")
	}
	return chromedp.Do(bctx, e2e.Screenshot(out))
}
