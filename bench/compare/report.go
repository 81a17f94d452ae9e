package main

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// row is one line of the comparison table: a figure for every server.
type row struct {
	label string
	ratio bool // show value / reference server's value
	cells map[string]cell
}

type cell struct {
	v   float64
	ok  bool
	err int // footnote number of the failed run, 0 when none
}

// table builds the Markdown comparison table of runs, one column per
// server, ratios against ref (the 1× column). acceptConns is the idle
// point measured for the acceptance figures (memory, CPU, connect rate);
// the other idle points are the RSS curve. Failed runs are footnoted.
func table(runs []measurement, servers []string, ref string, acceptConns int) string {
	var rows []*row
	byLabel := map[string]*row{}
	add := func(label string, ratio bool, server string, v float64, ok bool, errNote int) {
		rw := byLabel[label]
		if rw == nil {
			rw = &row{label: label, ratio: ratio, cells: map[string]cell{}}
			byLabel[label] = rw
			rows = append(rows, rw)
		}
		rw.cells[server] = cell{v: v, ok: ok, err: errNote}
	}
	var notes []string
	for _, kind := range []string{kindIdle, kindFanout, kindLeave} {
		for _, r := range sortedRuns(runs, kind, acceptConns) {
			note := 0
			if r.Error != "" {
				notes = append(notes, fmt.Sprintf("%s %s %s: %s", r.Server, r.Kind, fmtValue(float64(r.Conns)), r.Error))
				note = len(notes)
			}
			n := fmtValue(float64(r.Conns))
			switch r.Kind {
			case kindIdle:
				ok := r.RSSAfter > 0
				add(fmt.Sprintf("idle RSS per conn, %s conns (bytes)", n), true, r.Server, r.RSSPerConn, ok, note)
				if r.Conns == acceptConns {
					add(fmt.Sprintf("idle CPU per conn, %s conns (µs/s)", n), true, r.Server, r.IdleCPUUsConnS, ok, note)
					add(fmt.Sprintf("connect rate, %s conns (conns/s)", n), true, r.Server, r.ConnectPerS, r.ConnectPerS > 0, note)
				}
			case kindFanout:
				ok := r.CPUS > 0
				add(fmt.Sprintf("fanout %s listeners: CPU per change per listener (µs)", n), true, r.Server, r.CPUUsPerChangeL, ok, note)
				add(fmt.Sprintf("fanout %s listeners: deliveries per CPU-second", n), true, r.Server, r.DeliveriesPerCPUS, ok, note)
				add(fmt.Sprintf("fanout %s listeners: p99 change → seen (ms)", n), true, r.Server, r.P99Ms, r.Summary != nil, note)
				add(fmt.Sprintf("fanout %s listeners: stale listeners", n), false, r.Server, float64(r.Stale), r.Summary != nil, note)
			case kindLeave:
				add("cut → others learn, p50 (ms)", true, r.Server, r.LeaveP50Ms, r.Summary != nil, note)
				add("cut → others learn, p99 (ms)", true, r.Server, r.LeaveP99Ms, r.Summary != nil, note)
			}
		}
	}
	var b strings.Builder
	b.WriteString("| measurement |")
	for _, s := range servers {
		b.WriteString(" " + s + " |")
	}
	b.WriteString("\n|---|")
	b.WriteString(strings.Repeat("---:|", len(servers)))
	b.WriteString("\n")
	for _, rw := range rows {
		b.WriteString("| " + rw.label + " |")
		refCell := rw.cells[ref]
		for _, s := range servers {
			c, present := rw.cells[s]
			var txt string
			switch {
			case !present:
				txt = "—"
			case !c.ok:
				txt = "failed"
			default:
				txt = fmtValue(c.v)
				if rw.ratio && s != ref && refCell.ok && refCell.v > 0 {
					txt += " (" + fmtRatio(c.v/refCell.v) + ")"
				} else if rw.ratio && s == ref {
					txt += " (1×)"
				}
			}
			if present && c.err != 0 {
				txt += fmt.Sprintf(" [%d]", c.err)
			}
			b.WriteString(" " + txt + " |")
		}
		b.WriteString("\n")
	}
	if len(sortedRuns(runs, kindFanout, 0)) > 0 {
		b.WriteString("\nA server with stale listeners fell behind: its CPU per change per listener counts only the\n" +
			"window (changes plus a 2 s settle) and understates; deliveries per CPU-second does not.\n")
	}
	if len(notes) > 0 {
		b.WriteString("\n")
		for i, n := range notes {
			fmt.Fprintf(&b, "[%d] %s\n", i+1, n)
		}
	}
	return b.String()
}

// sortedRuns returns the runs of kind, the acceptance idle point first,
// then by connections, keeping the server order within a point.
func sortedRuns(runs []measurement, kind string, acceptConns int) []measurement {
	var out []measurement
	for _, r := range runs {
		if r.Kind == kind {
			out = append(out, r)
		}
	}
	rank := func(r measurement) int {
		if kind == kindIdle && r.Conns == acceptConns {
			return -1
		}
		return r.Conns
	}
	// insertion sort: stable, and the lists are short
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && rank(out[j]) < rank(out[j-1]); j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

// fmtValue prints v with the precision its size needs: thousands
// separators from 1,000, whole numbers from 100, then 1 or 2 decimals.
func fmtValue(v float64) string {
	a := math.Abs(v)
	switch {
	case math.IsNaN(v) || math.IsInf(v, 0):
		return "—"
	case a >= 1000:
		s := strconv.FormatInt(int64(math.Round(a)), 10)
		var b strings.Builder
		if v < 0 {
			b.WriteByte('-')
		}
		for i, ch := range s {
			if i > 0 && (len(s)-i)%3 == 0 {
				b.WriteByte(',')
			}
			b.WriteRune(ch)
		}
		return b.String()
	case a >= 100 || v == math.Trunc(v):
		return strconv.FormatFloat(math.Round(v), 'f', 0, 64)
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	default:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
}

// fmtRatio prints a ratio with two significant digits: 17×, 1.5×, 0.52×.
func fmtRatio(r float64) string {
	switch {
	case math.IsNaN(r) || math.IsInf(r, 0):
		return "—"
	case r >= 10:
		return fmtValue(math.Round(r)) + "×"
	case r >= 1:
		return strconv.FormatFloat(r, 'f', 1, 64) + "×"
	default:
		return strconv.FormatFloat(r, 'f', 2, 64) + "×"
	}
}
