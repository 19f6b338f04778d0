package storetest

import (
	"bytes"
	"crypto/rand"
	"errors"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/perchhq/perch/core"
)

var totpTests = []test{
	{"PendingConfirmReplace", testTOTPPendingConfirmReplace},
	{"StepAdvance", testTOTPStepAdvance},
	{"StepAdvanceConcurrent", testTOTPStepAdvanceConcurrent},
	{"RecoveryCodeOnce", testTOTPRecoveryCodeOnce},
	{"RecoveryCodeConcurrent", testTOTPRecoveryCodeConcurrent},
	{"Disable", testTOTPDisable},
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func hashes(n int) [][]byte {
	hs := make([][]byte, n)
	for i := range hs {
		hs[i] = randomBytes(32)
	}
	return hs
}

func (h *harness) totp(userID string) core.TOTPState {
	h.tb.Helper()
	st, err := h.store.TOTP(h.ctx, userID)
	if err != nil {
		h.tb.Fatalf("TOTP(%s): %v", userID, err)
	}
	return st
}

// enableTOTP enrolls and confirms a secret for the user at step, with the recovery codes.
func (h *harness) enableTOTP(userID string, codes [][]byte, step int64) []byte {
	h.tb.Helper()
	secret := randomBytes(48)
	if err := h.store.SetPendingTOTP(h.ctx, userID, secret, h.tick()); err != nil {
		h.tb.Fatalf("SetPendingTOTP: %v", err)
	}
	if ok, err := h.store.ConfirmTOTP(h.ctx, userID, secret, codes, step, h.tick()); err != nil || !ok {
		h.tb.Fatalf("ConfirmTOTP = %v, %v; want true", ok, err)
	}
	return secret
}

func sortedHashes(hs [][]byte) [][]byte {
	out := slices.Clone(hs)
	slices.SortFunc(out, bytes.Compare)
	return out
}

func sameHashes(got, want [][]byte) bool {
	return slices.EqualFunc(sortedHashes(got), sortedHashes(want), bytes.Equal)
}

func testTOTPPendingConfirmReplace(h *harness) {
	u := h.newUser("ann@example.com", h.tick())
	if st := h.totp(u.ID); st.On() || st.Pending != nil || st.RecoveryCodes != nil {
		h.tb.Fatalf("a new user's TOTP %+v, want none", st)
	}
	if err := h.store.SetPendingTOTP(h.ctx, h.next("user"), randomBytes(48), h.tick()); !errors.Is(err, core.ErrNotFound) {
		h.tb.Fatalf("SetPendingTOTP of an unknown user: %v, want core.ErrNotFound", err)
	}

	// A second enrollment replaces the pending secret; confirming the first then fails.
	first, second := randomBytes(48), randomBytes(48)
	if err := h.store.SetPendingTOTP(h.ctx, u.ID, first, h.tick()); err != nil {
		h.tb.Fatal(err)
	}
	if st := h.totp(u.ID); st.On() || !bytes.Equal(st.Pending, first) {
		h.tb.Fatalf("after an enrollment: %+v, want pending %x and off", st, first)
	}
	if err := h.store.SetPendingTOTP(h.ctx, u.ID, second, h.tick()); err != nil {
		h.tb.Fatal(err)
	}
	codes := hashes(10)
	if ok, err := h.store.ConfirmTOTP(h.ctx, u.ID, first, codes, 100, h.tick()); err != nil || ok {
		h.tb.Fatalf("ConfirmTOTP of a replaced secret = %v, %v; want false", ok, err)
	}
	if st := h.totp(u.ID); st.On() || !bytes.Equal(st.Pending, second) || len(st.RecoveryCodes) != 0 {
		h.tb.Fatalf("after a refused confirmation: %+v", st)
	}

	enabled := h.tick()
	if ok, err := h.store.ConfirmTOTP(h.ctx, u.ID, second, codes, 100, enabled); err != nil || !ok {
		h.tb.Fatalf("ConfirmTOTP = %v, %v; want true", ok, err)
	}
	st := h.totp(u.ID)
	if !st.On() || !bytes.Equal(st.Secret, second) || st.Pending != nil || st.LastStep != 100 ||
		!sameTime(st.Enabled, enabled) || !sameHashes(st.RecoveryCodes, codes) {
		h.tb.Fatalf("after confirming: %+v; want secret %x, step 100, enabled %v, the 10 codes", st, second, micro(enabled))
	}
	// Confirmed once: a second confirmation, or a new enrollment, is refused and changes
	// nothing.
	if ok, err := h.store.ConfirmTOTP(h.ctx, u.ID, second, hashes(10), 200, h.tick()); err != nil || ok {
		h.tb.Fatalf("a second ConfirmTOTP = %v, %v; want false", ok, err)
	}
	if err := h.store.SetPendingTOTP(h.ctx, u.ID, randomBytes(48), h.tick()); !errors.Is(err, core.ErrExists) {
		h.tb.Fatalf("SetPendingTOTP while on: %v, want core.ErrExists", err)
	}
	if again := h.totp(u.ID); !bytes.Equal(again.Secret, second) || again.Pending != nil || again.LastStep != 100 ||
		!sameHashes(again.RecoveryCodes, codes) {
		h.tb.Fatalf("refused calls changed the state: %+v", again)
	}
	// Another user is not affected.
	other := h.newUser("bob@example.com", h.tick())
	if st := h.totp(other.ID); st.On() || st.Pending != nil {
		h.tb.Fatalf("another user's TOTP %+v", st)
	}
	if ok, err := h.store.ConfirmTOTP(h.ctx, other.ID, second, codes, 1, h.tick()); err != nil || ok {
		h.tb.Fatalf("ConfirmTOTP without an enrollment = %v, %v; want false", ok, err)
	}
}

func testTOTPStepAdvance(h *harness) {
	u := h.newUser("ann@example.com", h.tick())
	if ok, err := h.store.AdvanceTOTPStep(h.ctx, u.ID, 5); err != nil || ok {
		h.tb.Fatalf("AdvanceTOTPStep while off = %v, %v; want false", ok, err)
	}
	if err := h.store.SetPendingTOTP(h.ctx, u.ID, randomBytes(48), h.tick()); err != nil {
		h.tb.Fatal(err)
	}
	if ok, err := h.store.AdvanceTOTPStep(h.ctx, u.ID, 5); err != nil || ok {
		h.tb.Fatalf("AdvanceTOTPStep while pending = %v, %v; want false", ok, err)
	}
	if err := h.store.DisableTOTP(h.ctx, u.ID); err != nil {
		h.tb.Fatal(err)
	}
	h.enableTOTP(u.ID, hashes(1), 1000)
	for _, tc := range []struct {
		step int64
		ok   bool
		last int64
	}{
		{999, false, 1000}, {1000, false, 1000}, {1001, true, 1001}, {1001, false, 1001}, {1003, true, 1003}, {1002, false, 1003},
	} {
		ok, err := h.store.AdvanceTOTPStep(h.ctx, u.ID, tc.step)
		if err != nil || ok != tc.ok {
			h.tb.Fatalf("AdvanceTOTPStep(%d) = %v, %v; want %v", tc.step, ok, err, tc.ok)
		}
		if st := h.totp(u.ID); st.LastStep != tc.last {
			h.tb.Fatalf("after AdvanceTOTPStep(%d): last step %d, want %d", tc.step, st.LastStep, tc.last)
		}
	}
}

// concurrently runs fn in 8 goroutines at once and returns how many reported true.
func (h *harness) concurrently(fn func() (bool, error)) int {
	h.tb.Helper()
	const n = 8
	var (
		wins  atomic.Int32
		wg    sync.WaitGroup
		start = make(chan struct{})
		errs  = make(chan error, n)
	)
	for range n {
		wg.Go(func() {
			<-start
			ok, err := fn()
			if err != nil {
				errs <- err
			}
			if ok {
				wins.Add(1)
			}
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		h.tb.Fatal(err)
	}
	return int(wins.Load())
}

func testTOTPStepAdvanceConcurrent(h *harness) {
	u := h.newUser("ann@example.com", h.tick())
	h.enableTOTP(u.ID, hashes(1), 1000)
	if n := h.concurrently(func() (bool, error) { return h.store.AdvanceTOTPStep(h.ctx, u.ID, 1001) }); n != 1 {
		h.tb.Fatalf("8 concurrent AdvanceTOTPStep of one step: %d succeeded, want exactly 1", n)
	}
	if st := h.totp(u.ID); st.LastStep != 1001 {
		h.tb.Fatalf("last step %d, want 1001", st.LastStep)
	}
}

func testTOTPRecoveryCodeOnce(h *harness) {
	u := h.newUser("ann@example.com", h.tick())
	other := h.newUser("bob@example.com", h.tick())
	codes := hashes(3)
	if ok, err := h.store.UseRecoveryCode(h.ctx, u.ID, codes[0]); err != nil || ok {
		h.tb.Fatalf("UseRecoveryCode while off = %v, %v; want false", ok, err)
	}
	h.enableTOTP(u.ID, codes, 1)
	h.enableTOTP(other.ID, hashes(3), 1)
	// Another user's code, or a hash not stored, is refused.
	if ok, err := h.store.UseRecoveryCode(h.ctx, other.ID, codes[1]); err != nil || ok {
		h.tb.Fatalf("another user's recovery code = %v, %v; want false", ok, err)
	}
	if ok, err := h.store.UseRecoveryCode(h.ctx, u.ID, randomBytes(32)); err != nil || ok {
		h.tb.Fatalf("an unknown recovery code = %v, %v; want false", ok, err)
	}
	if ok, err := h.store.UseRecoveryCode(h.ctx, u.ID, codes[1]); err != nil || !ok {
		h.tb.Fatalf("UseRecoveryCode = %v, %v; want true", ok, err)
	}
	if ok, err := h.store.UseRecoveryCode(h.ctx, u.ID, codes[1]); err != nil || ok {
		h.tb.Fatalf("a recovery code used again = %v, %v; want false", ok, err)
	}
	if st := h.totp(u.ID); !sameHashes(st.RecoveryCodes, [][]byte{codes[0], codes[2]}) {
		h.tb.Fatalf("recovery codes left %x, want the two unused", st.RecoveryCodes)
	}
	if st := h.totp(other.ID); len(st.RecoveryCodes) != 3 {
		h.tb.Fatalf("the other user has %d recovery codes, want 3", len(st.RecoveryCodes))
	}
}

func testTOTPRecoveryCodeConcurrent(h *harness) {
	u := h.newUser("ann@example.com", h.tick())
	codes := hashes(2)
	h.enableTOTP(u.ID, codes, 1)
	if n := h.concurrently(func() (bool, error) { return h.store.UseRecoveryCode(h.ctx, u.ID, codes[0]) }); n != 1 {
		h.tb.Fatalf("8 concurrent uses of one recovery code: %d succeeded, want exactly 1", n)
	}
	if st := h.totp(u.ID); !sameHashes(st.RecoveryCodes, codes[1:]) {
		h.tb.Fatalf("recovery codes left %x, want the unused one", st.RecoveryCodes)
	}
}

func testTOTPDisable(h *harness) {
	u := h.newUser("ann@example.com", h.tick())
	if err := h.store.DisableTOTP(h.ctx, u.ID); err != nil {
		h.tb.Fatalf("DisableTOTP with nothing to disable: %v", err)
	}
	codes := hashes(2)
	h.enableTOTP(u.ID, codes, 7)
	if err := h.store.DisableTOTP(h.ctx, u.ID); err != nil {
		h.tb.Fatal(err)
	}
	if st := h.totp(u.ID); st.On() || st.Pending != nil || st.RecoveryCodes != nil || !st.Enabled.IsZero() {
		h.tb.Fatalf("after DisableTOTP: %+v, want nothing", st)
	}
	if ok, err := h.store.UseRecoveryCode(h.ctx, u.ID, codes[0]); err != nil || ok {
		h.tb.Fatalf("a recovery code after DisableTOTP = %v, %v; want false", ok, err)
	}
	if ok, err := h.store.AdvanceTOTPStep(h.ctx, u.ID, 8); err != nil || ok {
		h.tb.Fatalf("AdvanceTOTPStep after DisableTOTP = %v, %v; want false", ok, err)
	}
	// And it can be enrolled again, from a fresh start: the old codes and step are gone.
	fresh := hashes(1)
	h.enableTOTP(u.ID, fresh, 3)
	if st := h.totp(u.ID); st.LastStep != 3 || !sameHashes(st.RecoveryCodes, fresh) {
		h.tb.Fatalf("enrolled again: %+v", st)
	}
}
