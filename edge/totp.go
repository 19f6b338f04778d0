package edge

import (
	"github.com/valyala/fasthttp"

	"github.com/perchhq/perch/internal/auth"
	"github.com/perchhq/perch/internal/problem"
	"github.com/perchhq/perch/internal/wire"
)

// The second factor's routes (edge/README.md, "Accounts and tokens"): a user with a verified
// access token enrolls a TOTP secret, confirms it with a code, and turns it off with a code.
// The edge checks the token and the body's shape; the core decides everything else (the
// codes, the throttle, the state) and the edge forwards its answer. Logins bring their code in
// the login body (credentialsJSON).

// totpCodeJSON is the body of POST /v1/me/totp/confirm and DELETE /v1/me/totp.
type totpCodeJSON struct {
	Code string `json:"code"`
}

// totpEnrollJSON is the body of POST /v1/me/totp: an empty object, or no body at all.
type totpEnrollJSON struct{}

func (e *Edge) totpEnroll(ctx *fasthttp.RequestCtx, p params) {
	if p.user == "" {
		e.refuseAuth(ctx, problemNeedsToken)
		return
	}
	if len(ctx.Request.Body()) > 0 {
		var body totpEnrollJSON
		if !e.authBody(ctx, &body) {
			return
		}
	}
	resp, pr := e.askAuth(&wire.AuthRequest{Op: wire.AuthTOTPEnroll, User: p.user}, e.cfg.WriteTimeout)
	if pr != nil {
		e.writeAuthProblem(ctx, pr)
		return
	}
	if resp.TOTP == nil {
		e.writeAuthProblem(ctx, problem.New(problem.Unavailable, "the account service answered without a secret"))
		return
	}
	e.answerAuth(ctx, fasthttp.StatusOK, resp.TOTP)
}

func (e *Edge) totpConfirm(ctx *fasthttp.RequestCtx, p params) {
	code, ok := e.totpCode(ctx, p)
	if !ok {
		return
	}
	resp, pr := e.askAuth(&wire.AuthRequest{Op: wire.AuthTOTPConfirm, User: p.user, TOTP: code}, e.cfg.WriteTimeout)
	if pr != nil {
		e.writeAuthProblem(ctx, pr)
		return
	}
	if resp.Recovery == nil {
		e.writeAuthProblem(ctx, problem.New(problem.Unavailable, "the account service answered without recovery codes"))
		return
	}
	e.answerAuth(ctx, fasthttp.StatusOK, resp.Recovery)
}

func (e *Edge) totpDisable(ctx *fasthttp.RequestCtx, p params) {
	code, ok := e.totpCode(ctx, p)
	if !ok {
		return
	}
	req := &wire.AuthRequest{Op: wire.AuthTOTPDisable, User: p.user}
	if isTOTPCode(code) {
		req.TOTP = code
	} else {
		req.RecoveryCode = code
	}
	if _, pr := e.askAuth(req, e.cfg.WriteTimeout); pr != nil {
		e.writeAuthProblem(ctx, pr)
		return
	}
	e.answerAuth(ctx, fasthttp.StatusNoContent, nil)
}

// totpCode checks that the request has a user and decodes its {"code": ...} body.
func (e *Edge) totpCode(ctx *fasthttp.RequestCtx, p params) (string, bool) {
	if p.user == "" {
		e.refuseAuth(ctx, problemNeedsToken)
		return "", false
	}
	var body totpCodeJSON
	if !e.authBody(ctx, &body) {
		return "", false
	}
	if body.Code == "" {
		e.writeAuthProblem(ctx, problem.New(problem.BadRequest, `the body must be {"code": ...}`))
		return "", false
	}
	return body.Code, true
}

// isTOTPCode reports whether code has the form of a TOTP code (six digits) rather than of a
// recovery code (sixteen characters, with or without dashes).
func isTOTPCode(code string) bool {
	if len(code) != auth.TOTPDigits {
		return false
	}
	for i := 0; i < len(code); i++ {
		if code[i] < '0' || code[i] > '9' {
			return false
		}
	}
	return true
}
