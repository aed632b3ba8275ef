package gateway

import (
	"errors"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/usher-presence/usher/auth"
	"github.com/usher-presence/usher/gateway/ncs"
)

// Errors of the HTTP layer that are not the ncs package's.
var (
	errBodyTooLarge  = errors.New("request body is too large")
	errReadBody      = errors.New("request body could not be read")
	errUnavailable   = errors.New("the notification could not be stored now; retry")
	errEventsDown    = errors.New("the presence events could not be read now; retry")
	errEventsExpired = errors.New("too old")
	errViewLoading   = errors.New("this instance is loading its rosters; retry in a moment")
	errNotFound      = errors.New("no such endpoint")
	errMethod        = errors.New("method not allowed on this endpoint")
	errMetricsToken  = errors.New("give USHER_METRICS_TOKEN as Authorization: Bearer <token>")
	errSource        = errors.New("this address may not post notifications (USHER_NCS_ALLOW_CIDRS)")
	errRateLimited   = errors.New("too many WebSocket upgrades from this address; retry after a pause")
)

// apiError is the JSON body of every error answer.
type apiError struct {
	Error   string `json:"error"`
	Message string `json:"message"`
}

// classify maps an error to its HTTP status and error code. It is the one place where that mapping lives.
func classify(err error) (int, string) {
	switch {
	case errors.Is(err, ncs.ErrMissingSignature):
		return http.StatusUnauthorized, "missing_signature"
	case errors.Is(err, ncs.ErrBadSignature):
		return http.StatusUnauthorized, "bad_signature"
	case errors.Is(err, errBodyTooLarge):
		return http.StatusRequestEntityTooLarge, "body_too_large"
	case errors.Is(err, errReadBody):
		return http.StatusBadRequest, "unreadable_body"
	case errors.Is(err, ncs.ErrNotJSON):
		return http.StatusBadRequest, "invalid_json"
	case errors.Is(err, ncs.ErrMissingField):
		return http.StatusBadRequest, "missing_field"
	case errors.Is(err, ncs.ErrInvalidChannel):
		return http.StatusBadRequest, "invalid_channel"
	case errors.Is(err, ncs.ErrInvalidPayload):
		return http.StatusBadRequest, "invalid_payload"
	case errors.Is(err, errMetricsToken):
		return http.StatusUnauthorized, "unauthorized"
	case errors.Is(err, errSource):
		return http.StatusForbidden, "forbidden_source"
	case errors.Is(err, errRateLimited):
		return http.StatusTooManyRequests, "rate_limited"
	case errors.Is(err, auth.ErrNoToken), errors.Is(err, auth.ErrInvalidToken), errors.Is(err, auth.ErrExpiredToken):
		return http.StatusUnauthorized, auth.ErrorCode(err)
	case errors.Is(err, errForbidden), errors.Is(err, errNeedsAll):
		return http.StatusForbidden, "forbidden"
	case errors.Is(err, errBadRequest):
		return http.StatusBadRequest, "bad_request"
	case errors.Is(err, errUnavailable), errors.Is(err, errEventsDown), errors.Is(err, errViewLoading):
		return http.StatusServiceUnavailable, "unavailable"
	case errors.Is(err, errEventsExpired):
		return http.StatusGone, "expired"
	case errors.Is(err, errNotFound):
		return http.StatusNotFound, "not_found"
	case errors.Is(err, errMethod):
		return http.StatusMethodNotAllowed, "method_not_allowed"
	}
	return http.StatusInternalServerError, "internal"
}

// errorJSON writes the last error a handler recorded with c.Error as {"error","message"}.
func errorJSON(c *gin.Context) {
	c.Next()
	if len(c.Errors) == 0 || c.Writer.Written() {
		return
	}
	err := c.Errors.Last().Err
	status, code := classify(err)
	msg := err.Error()
	if status == http.StatusInternalServerError {
		msg = "internal error"
	}
	c.AbortWithStatusJSON(status, apiError{Error: code, Message: msg})
}
