package main

import (
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"testing"
)

const sample = `{"started":"2026-12-04T19:00:00Z","commit":"abc","servers":["presenced-epoll","baseline","centrifugo"],"runs":[
 {"server":"presenced-epoll","kind":"idle","conns":5000,"rss_after":9,"rss_per_conn":900},
 {"server":"presenced-epoll","kind":"idle","conns":1000,"rss_after":9,"rss_per_conn":1500},
 {"server":"presenced-epoll","kind":"fanout","conns":5000},
 {"server":"baseline","kind":"idle","conns":1000,"rss_after":9,"rss_per_conn":17000},
 {"server":"baseline","kind":"idle","conns":5000,"error":"boom"},
 {"server":"centrifugo","kind":"leave","conns":1000}]}`

func TestLines(t *testing.T) {
	var res results
	if err := json.Unmarshal([]byte(sample), &res); err != nil {
		t.Fatal(err)
	}
	ls := lines(&res)
	if len(ls) != 2 || ls[0].server != "presenced-epoll" || len(ls[0].xys) != 2 || ls[0].xys[0].X != 1000 ||
		ls[1].server != "baseline" || len(ls[1].xys) != 1 {
		t.Fatalf("lines = %+v", ls)
	}
	if !needsLog(ls) {
		t.Error("900..17000 should be on a log scale")
	}
	if needsLog(ls[:1]) {
		t.Error("900..1500 should be linear")
	}
}

func TestRun(t *testing.T) {
	dir := t.TempDir()
	in, out := filepath.Join(dir, "results.json"), filepath.Join(dir, "rss.png")
	if err := os.WriteFile(in, []byte(sample), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := run([]string{"-in", in, "-out", out}, io.Discard); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(out); err != nil || st.Size() == 0 {
		t.Errorf("no image: %v", err)
	}
	if err := run([]string{"-out", out}, io.Discard); err == nil {
		t.Error("missing -in accepted")
	}
}
