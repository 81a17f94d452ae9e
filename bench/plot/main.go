// Command plot draws the RSS per idle joined connection against the number
// of connections, one line per server, from the results.json of
// bench/compare:
//
//	cd bench/plot && go run . -in ../../.cache/bench-compare/<run>/results.json -out ../rss-per-conn.png
//
// It is a module of its own so that gonum/plot stays out of presenced's
// go.mod; `make bench-compare` runs it at the end. The Y axis is
// logarithmic when the largest value is more than 10 times the smallest.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"image/color"
	"io"
	"os"
	"slices"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

func main() {
	err := run(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "plot:", err)
		os.Exit(1)
	}
}

// results is what plot reads of bench/compare's results.json.
type results struct {
	Started string   `json:"started"`
	Commit  string   `json:"commit"`
	Servers []string `json:"servers"`
	Runs    []struct {
		Server     string  `json:"server"`
		Kind       string  `json:"kind"`
		Conns      int     `json:"conns"`
		RSSAfter   int64   `json:"rss_after"`
		RSSPerConn float64 `json:"rss_per_conn"`
		Error      string  `json:"error"`
	} `json:"runs"`
}

// series is one server's line.
type series struct {
	server string
	xys    plotter.XYs
}

// lines returns one series per server of res (in its order) that has
// idle points with a positive RSS per connection, sorted by connections.
func lines(res *results) []series {
	var out []series
	for _, s := range res.Servers {
		var xys plotter.XYs
		for _, r := range res.Runs {
			if r.Server == s && r.Kind == "idle" && r.Error == "" && r.RSSAfter > 0 && r.RSSPerConn > 0 {
				xys = append(xys, plotter.XY{X: float64(r.Conns), Y: r.RSSPerConn})
			}
		}
		slices.SortFunc(xys, func(a, b plotter.XY) int { return int(a.X - b.X) })
		if len(xys) > 0 {
			out = append(out, series{server: s, xys: xys})
		}
	}
	return out
}

// span returns the smallest and largest value of ls.
func span(ls []series) (lo, hi float64) {
	for _, l := range ls {
		for _, p := range l.xys {
			if lo == 0 || p.Y < lo {
				lo = p.Y
			}
			hi = max(hi, p.Y)
		}
	}
	return lo, hi
}

// needsLog reports whether the values spread over more than 10×.
func needsLog(ls []series) bool {
	lo, hi := span(ls)
	return lo > 0 && hi/lo > 10
}

// wholeTicks labels ticks as whole numbers (bytes), not 50000.00.
type wholeTicks struct{ plot.Ticker }

func (t wholeTicks) Ticks(lo, hi float64) []plot.Tick {
	ts := t.Ticker.Ticks(lo, hi)
	for i := range ts {
		if ts[i].Label != "" {
			ts[i].Label = strconv.FormatFloat(ts[i].Value, 'f', 0, 64)
		}
	}
	return ts
}

func run(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("plot", flag.ContinueOnError)
	fs.SetOutput(stderr)
	in := fs.String("in", "", "results.json `file` of bench/compare (required)")
	out := fs.String("out", "rss-per-conn.png", "image `file` to write (.png, .svg or .pdf)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *in == "" {
		return errors.New("-in is required")
	}
	b, err := os.ReadFile(*in)
	if err != nil {
		return err
	}
	var res results
	if err := json.Unmarshal(b, &res); err != nil {
		return fmt.Errorf("%s: %w", *in, err)
	}
	ls := lines(&res)
	if len(ls) == 0 {
		return fmt.Errorf("%s: no idle measurement to plot", *in)
	}
	p := plot.New()
	p.Title.Text = fmt.Sprintf("RSS per idle joined connection (from outside, no forced GC), %s %s", res.Commit, res.Started)
	p.X.Label.Text = "connections"
	p.Y.Label.Text = "bytes per connection"
	p.Add(plotter.NewGrid())
	// Room above the lines for the legend; a linear axis starts at 0.
	lo, hi := span(ls)
	if needsLog(ls) {
		p.Y.Scale = plot.LogScale{}
		p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
		p.Y.Label.Text += " (log scale)"
		p.Y.Min, p.Y.Max = lo/1.5, hi*4
	} else {
		p.Y.Min, p.Y.Max = 0, hi*1.35
		p.Y.Tick.Marker = wholeTicks{plot.DefaultTicks{}}
	}
	p.Title.Padding = vg.Points(8)
	for i, l := range ls {
		line, points, err := plotter.NewLinePoints(l.xys)
		if err != nil {
			return err
		}
		c := plotutil.Color(i)
		line.Color, points.Color = c, c
		line.Width = vg.Points(1.5)
		points.Shape = plotutil.Shape(i)
		p.Add(line, points)
		p.Legend.Add(l.server, line, points)
	}
	p.Legend.Top = true
	p.Legend.Left = true
	p.Legend.XOffs, p.Legend.YOffs = vg.Points(10), vg.Points(-5)
	p.BackgroundColor = color.White
	if err := p.Save(9*vg.Inch, 5*vg.Inch, *out); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "plot: wrote %s\n", *out)
	return nil
}
