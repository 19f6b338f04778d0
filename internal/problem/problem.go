package problem

import (
	"encoding/json"
	"fmt"
	"net/http"
)

// ContentType is the media type of a problem body (RFC 9457 §3).
const ContentType = "application/problem+json"

// Code is a stable identifier of a kind of problem. Clients switch on it; it never changes
// meaning once published.
type Code string

// The codes Perch answers with. Each maps to one HTTP status, see Status.
const (
	BadJSON             Code = "bad_json"
	NotObject           Code = "not_object"
	BadRequest          Code = "bad_request"
	BadCursor           Code = "bad_cursor"
	BadName             Code = "bad_name"
	TooLarge            Code = "body_too_large"
	NotFound            Code = "not_found"
	RouteNotFound       Code = "route_not_found"
	MethodNotAllowed    Code = "method_not_allowed"
	PreconditionFailed  Code = "precondition_failed"
	UnsupportedMedia    Code = "unsupported_media_type"
	IdempotencyMismatch Code = "idempotency_key_reused"
	IdempotencyInFlight Code = "idempotency_key_in_flight"
	Unavailable         Code = "unavailable"
	Internal            Code = "internal"
	AlreadyExists       Code = "already_exists"
	RequestTimeout      Code = "request_timeout"
	HeadersTooLarge     Code = "headers_too_large"
	// IPNotAllowed: the client's address is on the edge's deny list, or not on its allow
	// list.
	IPNotAllowed Code = "ip_not_allowed"
	// TooManyConnections: the client's address already has as many connections open to the
	// edge as it may; reuse one of them.
	TooManyConnections Code = "too_many_connections"
	// Overloaded: the edge sheds load because what is behind it (the core, the write
	// stream) is saturated; nothing was done and a retry after Retry-After may succeed.
	Overloaded Code = "overloaded"
	// RateLimited: the caller (its address, user or API key) is over a rate limit of the
	// fleet; retry after Retry-After.
	RateLimited Code = "rate_limited"
	// Unauthorized: the request needs an access token and has none
	// (WWW-Authenticate: Bearer).
	Unauthorized Code = "unauthorized"
	// InvalidToken: the access token is malformed, forged, expired, not yet valid, for
	// another audience or issuer, signed by an unknown key, or revoked. The client refreshes
	// it, or logs in again.
	InvalidToken Code = "invalid_token"
	// InvalidAPIKey: the X-Api-Key is not a live key of the fleet (malformed, unknown or
	// revoked), or is missing where the edges require one. The app needs a key from
	// `perch keys create`.
	InvalidAPIKey Code = "invalid_api_key"
	// InvalidCredentials: a login's email and password do not match an account, or a refresh
	// or logout token is unknown, expired or revoked. The answer is the same whichever it
	// is, so that it reveals nothing about which accounts exist.
	InvalidCredentials Code = "invalid_credentials"
	// WeakPassword: a signup's password is shorter or longer than the bounds.
	WeakPassword Code = "weak_password"
	// Forbidden: the caller is known but may not do this (an access rule).
	Forbidden Code = "forbidden"
	// TooManyAttempts: too many failed logins for the account lately; retry after
	// Retry-After. Accounts that do not exist are throttled alike.
	TooManyAttempts Code = "too_many_attempts"
	// TOTPRequired: the login's email and password match an account that has a second
	// factor on; log in again with "totp" (a code of the authenticator) or "recovery_code".
	// Only a caller who knows the password gets it: a wrong password is invalid_credentials.
	TOTPRequired Code = "totp_required"
	// InvalidTOTP: the TOTP code or recovery code is wrong, or was used already (each is
	// accepted once). It counts as a failed login of the account.
	InvalidTOTP Code = "invalid_totp"
	// NotStorable: the database refused to store the write (it fails a check of the
	// database's, or a value is beyond what it keeps). The write is answered alone; the
	// others are applied.
	NotStorable Code = "not_storable"
)

var statuses = map[Code]int{
	BadJSON:             http.StatusBadRequest,
	NotObject:           http.StatusBadRequest,
	BadRequest:          http.StatusBadRequest,
	BadCursor:           http.StatusBadRequest,
	BadName:             http.StatusBadRequest,
	TooLarge:            http.StatusRequestEntityTooLarge,
	NotFound:            http.StatusNotFound,
	RouteNotFound:       http.StatusNotFound,
	MethodNotAllowed:    http.StatusMethodNotAllowed,
	PreconditionFailed:  http.StatusPreconditionFailed,
	UnsupportedMedia:    http.StatusUnsupportedMediaType,
	IdempotencyMismatch: http.StatusUnprocessableEntity,
	IdempotencyInFlight: http.StatusConflict,
	Unavailable:         http.StatusServiceUnavailable,
	Internal:            http.StatusInternalServerError,
	AlreadyExists:       http.StatusConflict,
	RequestTimeout:      http.StatusRequestTimeout,
	HeadersTooLarge:     http.StatusRequestHeaderFieldsTooLarge,
	IPNotAllowed:        http.StatusForbidden,
	TooManyConnections:  http.StatusTooManyRequests,
	Overloaded:          http.StatusServiceUnavailable,
	RateLimited:         http.StatusTooManyRequests,
	Unauthorized:        http.StatusUnauthorized,
	InvalidToken:        http.StatusUnauthorized,
	InvalidAPIKey:       http.StatusUnauthorized,
	InvalidCredentials:  http.StatusUnauthorized,
	WeakPassword:        http.StatusBadRequest,
	Forbidden:           http.StatusForbidden,
	TooManyAttempts:     http.StatusTooManyRequests,
	TOTPRequired:        http.StatusUnauthorized,
	InvalidTOTP:         http.StatusUnauthorized,
	NotStorable:         http.StatusUnprocessableEntity,
}

// Status is the HTTP status that goes with c; 500 for a code Perch does not know.
func (c Code) Status() int {
	if s, ok := statuses[c]; ok {
		return s
	}
	return http.StatusInternalServerError
}

// Problem is an RFC 9457 problem details object. It is also an error, so that it can travel
// up a call stack and be rendered once at the edge.
type Problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail,omitempty"`
	Code   Code   `json:"code"`
}

// New returns the problem for code with a human-readable detail. The type URI is derived from
// the code so that it is stable and resolvable in the docs.
func New(code Code, detail string) *Problem {
	status := code.Status()
	return &Problem{
		Type:   "urn:perch:problem:" + string(code),
		Title:  http.StatusText(status),
		Status: status,
		Detail: detail,
		Code:   code,
	}
}

// Newf is New with a formatted detail.
func Newf(code Code, format string, args ...any) *Problem {
	return New(code, fmt.Sprintf(format, args...))
}

func (p *Problem) Error() string {
	if p.Detail == "" {
		return string(p.Code)
	}
	return string(p.Code) + ": " + p.Detail
}

// JSON renders p. It cannot fail: every field is a plain string or int.
func (p *Problem) JSON() []byte {
	b, _ := json.Marshal(p)
	return b
}
