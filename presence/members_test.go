package presence

import (
	"fmt"
	"slices"
	"testing"
)

// TestMemberSet: the slice and map forms answer alike, across the switch
// from one to the other, and all tolerates the deletion of the member it
// yields (as ranging over a map does).
func TestMemberSet(t *testing.T) {
	for _, n := range []int{0, 1, smallMembers, smallMembers + 1, 3 * smallMembers} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			var ms memberSet
			var users []string
			for i := range n {
				u := fmt.Sprintf("u%d", i)
				users = append(users, u)
				ms.put(&member{user: u})
			}
			if got := ms.len(); got != n {
				t.Fatalf("len %d, want %d", got, n)
			}
			if big := ms.big != nil; big != (n > smallMembers) {
				t.Errorf("map form %v with %d members (slice up to %d)", big, n, smallMembers)
			}
			for _, u := range users {
				if m := ms.get(u); m == nil || m.user != u {
					t.Fatalf("get(%q) = %v", u, m)
				}
			}
			if ms.get("nobody") != nil {
				t.Errorf("get of a non-member is not nil")
			}
			var seen []string
			for m := range ms.all() {
				seen = append(seen, m.user)
				if len(seen)%2 == 0 {
					ms.del(m.user) // every second one, while walking
				}
			}
			slices.Sort(seen)
			want := slices.Clone(users)
			slices.Sort(want)
			if !slices.Equal(seen, want) {
				t.Fatalf("all yielded %v, want each of %v once", seen, want)
			}
			if got := ms.len(); got != n-n/2 {
				t.Fatalf("len %d after deleting %d of %d", got, n/2, n)
			}
			for m := range ms.all() {
				ms.del(m.user)
				if ms.get(m.user) != nil {
					t.Fatalf("%s still there after del", m.user)
				}
			}
			if ms.len() != 0 || ms.small != nil {
				t.Errorf("emptied set: len %d, slice %v", ms.len(), ms.small)
			}
		})
	}
}
