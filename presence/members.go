package presence

import "iter"

// smallMembers is the most members a room keeps in a slice; a room that
// grows past it switches to a map for good (until it is dropped). A
// slice costs 8 bytes a member, a Go map about 60: most rooms are small,
// and a linear search of a few dozen pointers costs less than hashing.
const smallMembers = 32

// memberSet is a room's members by user id: a slice while the room is
// small, a map once it is large. Guarded by the room's mu.
type memberSet struct {
	small []*member          // in no order; nil once big is set
	big   map[string]*member // nil while the room is small
}

// get returns user's member, or nil.
func (ms *memberSet) get(user string) *member {
	if ms.big != nil {
		return ms.big[user]
	}
	for _, m := range ms.small {
		if m.user == user {
			return m
		}
	}
	return nil
}

// put adds m, whose user is not a member yet.
func (ms *memberSet) put(m *member) {
	if ms.big == nil && len(ms.small) < smallMembers {
		ms.small = append(ms.small, m)
		return
	}
	if ms.big == nil {
		ms.big = make(map[string]*member, 2*smallMembers)
		for _, o := range ms.small {
			ms.big[o.user] = o
		}
		ms.small = nil
	}
	ms.big[m.user] = m
}

// del removes user's member, if any.
func (ms *memberSet) del(user string) {
	if ms.big != nil {
		delete(ms.big, user)
		return
	}
	for i, m := range ms.small {
		if m.user == user {
			last := len(ms.small) - 1
			ms.small[i] = ms.small[last]
			ms.small[last] = nil
			ms.small = ms.small[:last]
			if last == 0 {
				ms.small = nil // an emptied room keeps no array
			}
			return
		}
	}
}

func (ms *memberSet) len() int {
	if ms.big != nil {
		return len(ms.big)
	}
	return len(ms.small)
}

// all yields every member. The loop body may delete the member it was
// given and nothing else, and may not put: the small form is walked
// backwards, so the swap-remove of the current member only moves one
// already yielded, but deleting another could yield one twice, and a put
// that grows the set into a map would end the walk early.
func (ms *memberSet) all() iter.Seq[*member] {
	return func(yield func(*member) bool) {
		if ms.big != nil {
			for _, m := range ms.big {
				if !yield(m) {
					return
				}
			}
			return
		}
		for i := len(ms.small) - 1; i >= 0; i-- {
			if i >= len(ms.small) {
				continue // the body deleted more than the current member
			}
			if !yield(ms.small[i]) {
				return
			}
		}
	}
}
