// Package coalesce will hold the generic time-window coalescer that
// presence uses to send at most one net diff per room per tick: changes
// collected inside a window are merged (a join then a leave cancel out,
// several updates keep the last) and flushed together.
//
// It depends on the standard library only (enforced by deps_test.go at the
// module root). Nothing is implemented yet: this file only reserves the
// package.
package coalesce
