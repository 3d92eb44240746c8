export const id = 624;
export const ids = [624];
export const modules = {

/***/ 7897:
/***/ ((__unused_webpack___webpack_module__, __webpack_exports__, __webpack_require__) => {

/* harmony export */ __webpack_require__.d(__webpack_exports__, {
/* harmony export */   C: () => (/* binding */ APIPromise)
/* harmony export */ });
/* harmony import */ var _internal_tslib_mjs__WEBPACK_IMPORTED_MODULE_1__ = __webpack_require__(7235);
/* harmony import */ var _internal_parse_mjs__WEBPACK_IMPORTED_MODULE_0__ = __webpack_require__(3834);
var _APIPromise_client;


/**
 * A subclass of `Promise` providing additional helper methods
 * for interacting with the SDK.
 */
var APIPromise = /* @__PURE__ */ (() => {
    /**
     * A subclass of `Promise` providing additional helper methods
     * for interacting with the SDK.
     */
    class APIPromise extends Promise {
        constructor(client, responsePromise, parseResponse = _internal_parse_mjs__WEBPACK_IMPORTED_MODULE_0__/* .defaultParseResponse */ .c) {
            super((resolve) => {
                // this is maybe a bit weird but this has to be a no-op to not implicitly
                // parse the response body; instead .then, .catch, .finally are overridden
                // to parse the response
                resolve(null);
            });
            this.responsePromise = responsePromise;
            this.parseResponse = parseResponse;
            _APIPromise_client.set(this, void 0);
            (0,_internal_tslib_mjs__WEBPACK_IMPORTED_MODULE_1__/* .__classPrivateFieldSet */ .G)(this, _APIPromise_client, client, "f");
        }
        _thenUnwrap(transform) {
            return new APIPromise((0,_internal_tslib_mjs__WEBPACK_IMPORTED_MODULE_1__/* .__classPrivateFieldGet */ .g)(this, _APIPromise_client, "f"), this.responsePromise, async (client, props) => transform(await this.parseResponse(client, props), props));
        }
        /**
         * Gets the raw `Response` instance instead of parsing the response
         * data.
         *
         * If you want to parse the response body but still get the `Response`
         * instance, you can use {@link withResponse()}.
         *
         * \ud83d\udc4b Getting the wrong TypeScript type for `Response`?
         * Try setting `"moduleResolution": "NodeNext"` or add `"lib": ["DOM"]`
         * to your `tsconfig.json`.
         */
        asResponse() {
            return this.responsePromise.then((p) => p.response);
        }
        /**
         * Gets the parsed response data and the raw `Response` instance.
         *
         * If you just want to get the raw `Response` instance without parsing it,
         * you can use {@link asResponse()}.
         *
         * \ud83d\udc4b Getting the wrong TypeScript type for `Response`?
         * Try setting `"moduleResolution": "NodeNext"` or add `"lib": ["DOM"]`
         * to your `tsconfig.json`.
         */
        async withResponse() {
            const [data, response] = await Promise.all([this.parse(), this.asResponse()]);
            return { data, response };
        }
        parse() {
            if (!this.parsedPromise) {
                this.parsedPromise = this.responsePromise.then((data) => this.parseResponse((0,_internal_tslib_mjs__WEBPACK_IMPORTED_MODULE_1__/* .__classPrivateFieldGet */ .g)(this, _APIPromise_client, "f"), data));
            }
            return this.parsedPromise;
        }
        then(onfulfilled, onrejected) {
            return this.parse().then(onfulfilled, onrejected);
        }
        catch(onrejected) {
            return this.parse().catch(onrejected);
        }
        finally(onfinally) {
            return this.parse().finally(onfinally);
        }
    }
    _APIPromise_client = new WeakMap();
    return APIPromise;
})();
//# sourceMappingURL=api-promise.mjs.map

/***/ }),

/***/ 831:
/***/ ((__unused_webpack___webpack_module__, __webpack_exports__, __webpack_require__) => {

/* harmony export */ __webpack_require__.d(__webpack_exports__, {
/* harmony export */   LG: () => (/* binding */ APIError),
/* harmony export */   Oi: () => (/* binding */ CloudflareError),
/* harmony export */   cH: () => (/* binding */ APIUserAbortError),
/* harmony export */   qA: () => (/* binding */ APIConnectionTimeoutError),
/* harmony export */   xX: () => (/* binding */ APIConnectionError)
/* harmony export */ });
/* unused harmony exports BadRequestError, AuthenticationError, PermissionDeniedError, NotFoundError, ConflictError, UnprocessableEntityError, RateLimitError, InternalServerError */
/* harmony import */ var _internal_errors_mjs__WEBPACK_IMPORTED_MODULE_0__ = __webpack_require__(8996);
// File generated from our OpenAPI spec by Stainless. See CONTRIBUTING.md for details.

var CloudflareError = /* @__PURE__ */ (() => {
    class CloudflareError extends Error {
    }
    return CloudflareError;
})();
class APIError extends CloudflareError {
    constructor(status, error, message, headers) {
        super(`${APIError.makeMessage(status, error, message)}`);
        this.status = status;
        this.headers = headers;
        this.error = error;
        const data = error;
        this.errors = data?.['errors'] ?? [];
    }
    static makeMessage(status, error, message) {
        const msg = error?.message ?
            typeof error.message === 'string' ?
                error.message
                : JSON.stringify(error.message)
            : error ? JSON.stringify(error)
                : message;
        if (status && msg) {
            return `${status} ${msg}`;
        }
        if (status) {
            return `${status} status code (no body)`;
        }
        if (msg) {
            return msg;
        }
        return '(no status code or body)';
    }
    static generate(status, errorResponse, message, headers) {
        if (!status || !headers) {
            return new APIConnectionError({ message, cause: (0,_internal_errors_mjs__WEBPACK_IMPORTED_MODULE_0__/* .castToError */ .r)(errorResponse) });
        }
        const error = errorResponse;
        if (status === 400) {
            return new BadRequestError(status, error, message, headers);
        }
        if (status === 401) {
            return new AuthenticationError(status, error, message, headers);
        }
        if (status === 403) {
            return new PermissionDeniedError(status, error, message, headers);
        }
        if (status === 404) {
            return new NotFoundError(status, error, message, headers);
        }
        if (status === 409) {
            return new ConflictError(status, error, message, headers);
        }
        if (status === 422) {
            return new UnprocessableEntityError(status, error, message, headers);
        }
        if (status === 429) {
            return new RateLimitError(status, error, message, headers);
        }
        if (status >= 500) {
            return new InternalServerError(status, error, message, headers);
        }
        return new APIError(status, error, message, headers);
    }
}
class APIUserAbortError extends APIError {
    constructor({ message } = {}) {
        super(undefined, undefined, message || 'Request was aborted.', undefined);
    }
}
class APIConnectionError extends APIError {
    constructor({ message, cause }) {
        super(undefined, undefined, message || 'Connection error.', undefined);
        // in some environments the 'cause' property is already declared
        // @ts-ignore
        if (cause)
            this.cause = cause;
    }
}
class APIConnectionTimeoutError extends APIConnectionError {
    constructor({ message } = {}) {
        super({ message: message ?? 'Request timed out.' });
    }
}
class BadRequestError extends APIError {
}
class AuthenticationError extends APIError {
}
class PermissionDeniedError extends APIError {
}
class NotFoundError extends APIError {
}
class ConflictError extends APIError {
}
class UnprocessableEntityError extends APIError {
}
class RateLimitError extends APIError {
}
class InternalServerError extends APIError {
}
//# sourceMappingURL=error.mjs.map

/***/ }),

/***/ 8483:
/***/ ((__unused_webpack___webpack_module__, __webpack_exports__, __webpack_require__) => {

/* harmony export */ __webpack_require__.d(__webpack_exports__, {
/* harmony export */   $9: () => (/* binding */ V4PagePaginationArray),
/* harmony export */   CR: () => (/* binding */ SinglePage),
/* harmony export */   mu: () => (/* binding */ V4PagePagination),
/* harmony export */   nC: () => (/* binding */ PagePromise)
/* harmony export */ });
/* unused harmony exports AbstractPage, CursorPagination, CursorPaginationAfter, CursorLimitPagination, ContainersInstancesV1Pagination, PageTokenPagination */
/* harmony import */ var _internal_tslib_mjs__WEBPACK_IMPORTED_MODULE_0__ = __webpack_require__(7235);
/* harmony import */ var _error_mjs__WEBPACK_IMPORTED_MODULE_1__ = __webpack_require__(831);
/* harmony import */ var _internal_parse_mjs__WEBPACK_IMPORTED_MODULE_3__ = __webpack_require__(3834);
/* harmony import */ var _api_promise_mjs__WEBPACK_IMPORTED_MODULE_2__ = __webpack_require__(7897);
/* harmony import */ var _internal_utils_values_mjs__WEBPACK_IMPORTED_MODULE_4__ = __webpack_require__(3797);
var _AbstractPage_client;

// File generated from our OpenAPI spec by Stainless. See CONTRIBUTING.md for details.




var AbstractPage = /* @__PURE__ */ (() => {
    class AbstractPage {
        constructor(client, response, body, options) {
            _AbstractPage_client.set(this, void 0);
            (0,_internal_tslib_mjs__WEBPACK_IMPORTED_MODULE_0__/* .__classPrivateFieldSet */ .G)(this, _AbstractPage_client, client, "f");
            this.options = options;
            this.response = response;
            this.body = body;
        }
        hasNextPage() {
            const items = this.getPaginatedItems();
            if (!items.length)
                return false;
            return this.nextPageRequestOptions() != null;
        }
        async getNextPage() {
            const nextOptions = this.nextPageRequestOptions();
            if (!nextOptions) {
                throw new _error_mjs__WEBPACK_IMPORTED_MODULE_1__/* .CloudflareError */ .Oi('No next page expected; please check `.hasNextPage()` before calling `.getNextPage()`.');
            }
            return await (0,_internal_tslib_mjs__WEBPACK_IMPORTED_MODULE_0__/* .__classPrivateFieldGet */ .g)(this, _AbstractPage_client, "f").requestAPIList(this.constructor, nextOptions);
        }
        async *iterPages() {
            let page = this;
            yield page;
            while (page.hasNextPage()) {
                page = await page.getNextPage();
                yield page;
            }
        }
        async *[(_AbstractPage_client = new WeakMap(), Symbol.asyncIterator)]() {
            for await (const page of this.iterPages()) {
                for (const item of page.getPaginatedItems()) {
                    yield item;
                }
            }
        }
    }
    return AbstractPage;
})();
/**
 * This subclass of Promise will resolve to an instantiated Page once the request completes.
 *
 * It also implements AsyncIterable to allow auto-paginating iteration on an unawaited list call, eg:
 *
 *    for await (const item of client.items.list()) {
 *      console.log(item)
 *    }
 */
var PagePromise = /* @__PURE__ */ (() => {
    /**
     * This subclass of Promise will resolve to an instantiated Page once the request completes.
     *
     * It also implements AsyncIterable to allow auto-paginating iteration on an unawaited list call, eg:
     *
     *    for await (const item of client.items.list()) {
     *      console.log(item)
     *    }
     */
    class PagePromise extends _api_promise_mjs__WEBPACK_IMPORTED_MODULE_2__/* .APIPromise */ .C {
        constructor(client, request, Page) {
            super(client, request, async (client, props) => new Page(client, props.response, await (0,_internal_parse_mjs__WEBPACK_IMPORTED_MODULE_3__/* .defaultParseResponse */ .c)(client, props), props.options));
        }
        /**
         * Allow auto-paginating iteration on an unawaited list call, eg:
         *
         *    for await (const item of client.items.list()) {
         *      console.log(item)
         *    }
         */
        async *[Symbol.asyncIterator]() {
            const page = await this;
            for await (const item of page) {
                yield item;
            }
        }
    }
    return PagePromise;
})();
class V4PagePagination extends AbstractPage {
    constructor(client, response, body, options) {
        super(client, response, body, options);
        this.result = body.result || {};
        this.result_info = body.result_info || {};
    }
    getPaginatedItems() {
        return this.result?.items ?? [];
    }
    nextPageRequestOptions() {
        const query = this.options.query;
        const currentPage = query?.page ?? 1;
        return {
            ...this.options,
            query: {
                ...(0,_internal_utils_values_mjs__WEBPACK_IMPORTED_MODULE_4__/* .maybeObj */ .i8)(this.options.query),
                page: currentPage + 1,
            },
        };
    }
}
class V4PagePaginationArray extends AbstractPage {
    constructor(client, response, body, options) {
        super(client, response, body, options);
        this.result = body.result || [];
        this.result_info = body.result_info || {};
    }
    getPaginatedItems() {
        return this.result ?? [];
    }
    nextPageRequestOptions() {
        const query = this.options.query;
        const currentPage = query?.page ?? 1;
        return {
            ...this.options,
            query: {
                ...(0,_internal_utils_values_mjs__WEBPACK_IMPORTED_MODULE_4__/* .maybeObj */ .i8)(this.options.query),
                page: currentPage + 1,
            },
        };
    }
}
class CursorPagination extends AbstractPage {
    constructor(client, response, body, options) {
        super(client, response, body, options);
        this.result = body.result || [];
        this.result_info = body.result_info || {};
    }
    getPaginatedItems() {
        return this.result ?? [];
    }
    nextPageRequestOptions() {
        const cursor = this.result_info?.cursor;
        if (!cursor) {
            return null;
        }
        return {
            ...this.options,
            query: {
                ...(0,_internal_utils_values_mjs__WEBPACK_IMPORTED_MODULE_4__/* .maybeObj */ .i8)(this.options.query),
                cursor,
            },
        };
    }
}
class CursorPaginationAfter extends AbstractPage {
    constructor(client, response, body, options) {
        super(client, response, body, options);
        this.result = body.result || [];
        this.result_info = body.result_info || {};
    }
    getPaginatedItems() {
        return this.result ?? [];
    }
    nextPageRequestOptions() {
        const cursor = this.result_info?.cursors?.after;
        if (!cursor) {
            return null;
        }
        return {
            ...this.options,
            query: {
                ...(0,_internal_utils_values_mjs__WEBPACK_IMPORTED_MODULE_4__/* .maybeObj */ .i8)(this.options.query),
                cursor,
            },
        };
    }
}
class CursorLimitPagination extends AbstractPage {
    constructor(client, response, body, options) {
        super(client, response, body, options);
        this.result = body.result || [];
        this.result_info = body.result_info || {};
    }
    getPaginatedItems() {
        return this.result ?? [];
    }
    nextPageRequestOptions() {
        const cursor = this.result_info?.cursor;
        if (!cursor) {
            return null;
        }
        return {
            ...this.options,
            query: {
                ...(0,_internal_utils_values_mjs__WEBPACK_IMPORTED_MODULE_4__/* .maybeObj */ .i8)(this.options.query),
                cursor,
            },
        };
    }
}
class ContainersInstancesV1Pagination extends AbstractPage {
    constructor(client, response, body, options) {
        super(client, response, body, options);
        this.result = body.result || {};
        this.result_info = body.result_info || {};
    }
    getPaginatedItems() {
        return this.result?.instances ?? [];
    }
    nextPageRequestOptions() {
        const cursor = this.result_info?.next_page_token;
        if (!cursor) {
            return null;
        }
        return {
            ...this.options,
            query: {
                ...(0,_internal_utils_values_mjs__WEBPACK_IMPORTED_MODULE_4__/* .maybeObj */ .i8)(this.options.query),
                page_token: cursor,
            },
        };
    }
}
class PageTokenPagination extends AbstractPage {
    constructor(client, response, body, options) {
        super(client, response, body, options);
        this.result = body.result || [];
        this.result_info = body.result_info || {};
    }
    getPaginatedItems() {
        return this.result ?? [];
    }
    nextPageRequestOptions() {
        const cursor = this.result_info?.next_page_token;
        if (!cursor) {
            return null;
        }
        return {
            ...this.options,
            query: {
                ...(0,_internal_utils_values_mjs__WEBPACK_IMPORTED_MODULE_4__/* .maybeObj */ .i8)(this.options.query),
                page_token: cursor,
            },
        };
    }
}
class SinglePage extends AbstractPage {
    constructor(client, response, body, options) {
        super(client, response, body, options);
        this.result = body.result || [];
    }
    getPaginatedItems() {
        return this.result ?? [];
    }
    nextPageRequestOptions() {
        return null;
    }
}
//# sourceMappingURL=pagination.mjs.map

/***/ }),

/***/ 4123:
/***/ ((__unused_webpack___webpack_module__, __webpack_exports__, __webpack_require__) => {

/* harmony export */ __webpack_require__.d(__webpack_exports__, {
/* harmony export */   h: () => (/* binding */ APIResource)
/* harmony export */ });
var APIResource = /* @__PURE__ */ (() => {
    class APIResource {
        constructor(client) {
            this._client = client;
        }
    }
    /**
     * The key path from the client. For example, a resource accessible as `client.resource.subresource` would
     * have a property `static override readonly _key = Object.freeze(['resource', 'subresource'] as const);`.
     */
    APIResource._key = [];
    return APIResource;
})();
//# sourceMappingURL=resource.mjs.map

/***/ }),

/***/ 8996:
/***/ ((__unused_webpack___webpack_module__, __webpack_exports__, __webpack_require__) => {

/* harmony export */ __webpack_require__.d(__webpack_exports__, {
/* harmony export */   r: () => (/* binding */ castToError),
/* harmony export */   z: () => (/* binding */ isAbortError)
/* harmony export */ });
// File generated from our OpenAPI spec by Stainless. See CONTRIBUTING.md for details.
function isAbortError(err) {
    return (typeof err === 'object' &&
        err !== null &&
        // Spec-compliant fetch implementations
        (('name' in err && err.name === 'AbortError') ||
            // Expo fetch
            ('message' in err && String(err.message).includes('FetchRequestCanceledException'))));
}
const castToError = (err) => {
    if (err instanceof Error)
        return err;
    if (typeof err === 'object' && err !== null) {
        try {
            if (Object.prototype.toString.call(err) === '[object Error]') {
                // @ts-ignore - not all envs have native support for cause yet
                const error = new Error(err.message, err.cause ? { cause: err.cause } : {});
                if (err.stack)
                    error.stack = err.stack;
                // @ts-ignore - not all envs have native support for cause yet
                if (err.cause && !error.cause)
                    error.cause = err.cause;
                if (err.name)
                    error.name = err.name;
                return error;
            }
        }
        catch { }
        try {
            return new Error(JSON.stringify(err));
        }
        catch { }
    }
    return new Error(err);
};
//# sourceMappingURL=errors.mjs.map

/***/ }),

/***/ 3834:
/***/ ((__unused_webpack___webpack_module__, __webpack_exports__, __webpack_require__) => {

/* harmony export */ __webpack_require__.d(__webpack_exports__, {
/* harmony export */   c: () => (/* binding */ defaultParseResponse)
/* harmony export */ });
/* harmony import */ var _utils_log_mjs__WEBPACK_IMPORTED_MODULE_0__ = __webpack_require__(7679);

async function defaultParseResponse(client, props) {
    const { response, requestLogID, retryOfRequestLogID, startTime } = props;
    const body = await (async () => {
        // fetch refuses to read the body when the status code is 204.
        if (response.status === 204) {
            return null;
        }
        if (props.options.__binaryResponse) {
            return response;
        }
        const contentType = response.headers.get('content-type');
        const mediaType = contentType?.split(';')[0]?.trim();
        const isJSON = mediaType?.includes('application/json') || mediaType?.endsWith('+json');
        if (isJSON) {
            const contentLength = response.headers.get('content-length');
            if (contentLength === '0') {
                // if there is no content we can't do anything
                return undefined;
            }
            const json = await response.json();
            return json;
        }
        const text = await response.text();
        return text;
    })();
    (0,_utils_log_mjs__WEBPACK_IMPORTED_MODULE_0__/* .loggerFor */ .WG)(client).debug(`[${requestLogID}] response parsed`, (0,_utils_log_mjs__WEBPACK_IMPORTED_MODULE_0__/* .formatRequestDetails */ .xL)({
        retryOfRequestLogID,
        url: response.url,
        status: response.status,
        body,
        durationMs: Date.now() - startTime,
    }));
    return body;
}
//# sourceMappingURL=parse.mjs.map

/***/ }),

/***/ 7235:
/***/ ((__unused_webpack___webpack_module__, __webpack_exports__, __webpack_require__) => {

/* harmony export */ __webpack_require__.d(__webpack_exports__, {
/* harmony export */   G: () => (/* binding */ __classPrivateFieldSet),
/* harmony export */   g: () => (/* binding */ __classPrivateFieldGet)
/* harmony export */ });
function __classPrivateFieldSet(receiver, state, value, kind, f) {
    if (kind === "m")
        throw new TypeError("Private method is not writable");
    if (kind === "a" && !f)
        throw new TypeError("Private accessor was defined without a setter");
    if (typeof state === "function" ? receiver !== state || !f : !state.has(receiver))
        throw new TypeError("Cannot write private member to an object whose class did not declare it");
    return kind === "a" ? f.call(receiver, value) : f ? (f.value = value) : state.set(receiver, value), value;
}
function __classPrivateFieldGet(receiver, state, kind, f) {
    if (kind === "a" && !f)
        throw new TypeError("Private accessor was defined without a getter");
    if (typeof state === "function" ? receiver !== state || !f : !state.has(receiver))
        throw new TypeError("Cannot read private member from an object whose class did not declare it");
    return kind === "m" ? f : kind === "a" ? f.call(receiver) : f ? f.value : state.get(receiver);
}



/***/ }),

/***/ 7679:
/***/ ((__unused_webpack___webpack_module__, __webpack_exports__, __webpack_require__) => {

/* harmony export */ __webpack_require__.d(__webpack_exports__, {
/* harmony export */   ML: () => (/* binding */ parseLogLevel),
/* harmony export */   WG: () => (/* binding */ loggerFor),
/* harmony export */   xL: () => (/* binding */ formatRequestDetails)
/* harmony export */ });
/* harmony import */ var _values_mjs__WEBPACK_IMPORTED_MODULE_0__ = __webpack_require__(3797);
// File generated from our OpenAPI spec by Stainless. See CONTRIBUTING.md for details.

const levelNumbers = {
    off: 0,
    error: 200,
    warn: 300,
    info: 400,
    debug: 500,
};
const parseLogLevel = (maybeLevel, sourceName, client) => {
    if (!maybeLevel) {
        return undefined;
    }
    if ((0,_values_mjs__WEBPACK_IMPORTED_MODULE_0__/* .hasOwn */ .$3)(levelNumbers, maybeLevel)) {
        return maybeLevel;
    }
    loggerFor(client).warn(`${sourceName} was set to ${JSON.stringify(maybeLevel)}, expected one of ${JSON.stringify(Object.keys(levelNumbers))}`);
    return undefined;
};
function noop() { }
function makeLogFn(fnLevel, logger, logLevel) {
    if (!logger || levelNumbers[fnLevel] > levelNumbers[logLevel]) {
        return noop;
    }
    else {
        // Don't wrap logger functions, we want the stacktrace intact!
        return logger[fnLevel].bind(logger);
    }
}
const noopLogger = {
    error: noop,
    warn: noop,
    info: noop,
    debug: noop,
};
let cachedLoggers = /* @__PURE__ */ new WeakMap();
function loggerFor(client) {
    const logger = client.logger;
    const logLevel = client.logLevel ?? 'off';
    if (!logger) {
        return noopLogger;
    }
    const cachedLogger = cachedLoggers.get(logger);
    if (cachedLogger && cachedLogger[0] === logLevel) {
        return cachedLogger[1];
    }
    const levelLogger = {
        error: makeLogFn('error', logger, logLevel),
        warn: makeLogFn('warn', logger, logLevel),
        info: makeLogFn('info', logger, logLevel),
        debug: makeLogFn('debug', logger, logLevel),
    };
    cachedLoggers.set(logger, [logLevel, levelLogger]);
    return levelLogger;
}
const formatRequestDetails = (details) => {
    if (details.options) {
        details.options = { ...details.options };
        delete details.options['headers']; // redundant + leaks internals
    }
    if (details.headers) {
        details.headers = Object.fromEntries((details.headers instanceof Headers ? [...details.headers] : Object.entries(details.headers)).map(([name, value]) => [
            name,
            (name.toLowerCase() === 'authorization' ||
                name.toLowerCase() === 'api-key' ||
                name.toLowerCase() === 'x-api-key' ||
                name.toLowerCase() === 'cookie' ||
                name.toLowerCase() === 'set-cookie' ||
                name.toLowerCase() === 'x-auth-email' ||
                name.toLowerCase() === 'x-auth-key' ||
                name.toLowerCase() === 'x-auth-user-service-key') ?
                '***'
                : value,
        ]));
    }
    if ('retryOfRequestLogID' in details) {
        if (details.retryOfRequestLogID) {
            details.retryOf = details.retryOfRequestLogID;
        }
        delete details.retryOfRequestLogID;
    }
    return details;
};
//# sourceMappingURL=log.mjs.map

/***/ }),

/***/ 2:
/***/ ((__unused_webpack___webpack_module__, __webpack_exports__, __webpack_require__) => {

/* harmony export */ __webpack_require__.d(__webpack_exports__, {
/* harmony export */   Ae: () => (/* binding */ path)
/* harmony export */ });
/* unused harmony exports encodeURIPath, createPathTagFunction */
/* harmony import */ var _core_error_mjs__WEBPACK_IMPORTED_MODULE_0__ = __webpack_require__(831);

/**
 * Percent-encode everything that isn't safe to have in a path without encoding safe chars.
 *
 * Taken from https://datatracker.ietf.org/doc/html/rfc3986#section-3.3:
 * > unreserved  = ALPHA / DIGIT / "-" / "." / "_" / "~"
 * > sub-delims  = "!" / "$" / "&" / "'" / "(" / ")" / "*" / "+" / "," / ";" / "="
 * > pchar       = unreserved / pct-encoded / sub-delims / ":" / "@"
 */
function encodeURIPath(str) {
    return str.replace(/[^A-Za-z0-9\-._~!$&'()*+,;=:@]+/g, encodeURIComponent);
}
const EMPTY = /* @__PURE__ */ Object.freeze(/* @__PURE__ */ Object.create(null));
const createPathTagFunction = (pathEncoder = encodeURIPath) => function path(statics, ...params) {
    // If there are no params, no processing is needed.
    if (statics.length === 1)
        return statics[0];
    let postPath = false;
    const invalidSegments = [];
    const path = statics.reduce((previousValue, currentValue, index) => {
        if (/[?#]/.test(currentValue)) {
            postPath = true;
        }
        const value = params[index];
        let encoded = (postPath ? encodeURIComponent : pathEncoder)('' + value);
        if (index !== params.length &&
            (value == null ||
                (typeof value === 'object' &&
                    // handle values from other realms
                    value.toString ===
                        Object.getPrototypeOf(Object.getPrototypeOf(value.hasOwnProperty ?? EMPTY) ?? EMPTY)
                            ?.toString))) {
            encoded = value + '';
            invalidSegments.push({
                start: previousValue.length + currentValue.length,
                length: encoded.length,
                error: `Value of type ${Object.prototype.toString
                    .call(value)
                    .slice(8, -1)} is not a valid path parameter`,
            });
        }
        return previousValue + currentValue + (index === params.length ? '' : encoded);
    }, '');
    const pathOnly = path.split(/[?#]/, 1)[0];
    const invalidSegmentPattern = /(?<=^|\/)(?:\.|%2e){1,2}(?=\/|$)/gi;
    let match;
    // Find all invalid segments
    while ((match = invalidSegmentPattern.exec(pathOnly)) !== null) {
        invalidSegments.push({
            start: match.index,
            length: match[0].length,
            error: `Value "${match[0]}" can\'t be safely passed as a path parameter`,
        });
    }
    invalidSegments.sort((a, b) => a.start - b.start);
    if (invalidSegments.length > 0) {
        let lastEnd = 0;
        const underline = invalidSegments.reduce((acc, segment) => {
            const spaces = ' '.repeat(segment.start - lastEnd);
            const arrows = '^'.repeat(segment.length);
            lastEnd = segment.start + segment.length;
            return acc + spaces + arrows;
        }, '');
        throw new _core_error_mjs__WEBPACK_IMPORTED_MODULE_0__/* .CloudflareError */ .Oi(`Path parameters result in path with invalid segments:\n${invalidSegments
            .map((e) => e.error)
            .join('\n')}\n${path}\n${underline}`);
    }
    return path;
};
/**
 * URI-encodes path params and ensures no unsafe /./ or /../ path segments are introduced.
 */
const path = /* @__PURE__ */ createPathTagFunction(encodeURIPath);
//# sourceMappingURL=path.mjs.map

/***/ }),

/***/ 3797:
/***/ ((__unused_webpack___webpack_module__, __webpack_exports__, __webpack_require__) => {

/* harmony export */ __webpack_require__.d(__webpack_exports__, {
/* harmony export */   $3: () => (/* binding */ hasOwn),
/* harmony export */   MH: () => (/* binding */ isReadonlyArray),
/* harmony export */   cy: () => (/* binding */ isArray),
/* harmony export */   i8: () => (/* binding */ maybeObj),
/* harmony export */   ml: () => (/* binding */ safeJSON),
/* harmony export */   nt: () => (/* binding */ isAbsoluteURL),
/* harmony export */   wQ: () => (/* binding */ validatePositiveInteger),
/* harmony export */   ze: () => (/* binding */ isEmptyObj)
/* harmony export */ });
/* unused harmony exports isObj, ensurePresent, coerceInteger, coerceFloat, coerceBoolean, maybeCoerceInteger, maybeCoerceFloat, maybeCoerceBoolean */
/* harmony import */ var _core_error_mjs__WEBPACK_IMPORTED_MODULE_0__ = __webpack_require__(831);
// File generated from our OpenAPI spec by Stainless. See CONTRIBUTING.md for details.

// https://url.spec.whatwg.org/#url-scheme-string
const startsWithSchemeRegexp = /^[a-z][a-z0-9+.-]*:/i;
const isAbsoluteURL = (url) => {
    return startsWithSchemeRegexp.test(url);
};
let isArray = (val) => ((isArray = Array.isArray), isArray(val));
let isReadonlyArray = isArray;
/** Returns an object if the given value isn't an object, otherwise returns as-is */
function maybeObj(x) {
    if (typeof x !== 'object') {
        return {};
    }
    return x ?? {};
}
// https://stackoverflow.com/a/34491287
function isEmptyObj(obj) {
    if (!obj)
        return true;
    for (const _k in obj)
        return false;
    return true;
}
// https://eslint.org/docs/latest/rules/no-prototype-builtins
function hasOwn(obj, key) {
    return Object.prototype.hasOwnProperty.call(obj, key);
}
function isObj(obj) {
    return obj != null && typeof obj === 'object' && !Array.isArray(obj);
}
const ensurePresent = (value) => {
    if (value == null) {
        throw new CloudflareError(`Expected a value to be given but received ${value} instead.`);
    }
    return value;
};
const validatePositiveInteger = (name, n) => {
    if (typeof n !== 'number' || !Number.isInteger(n)) {
        throw new _core_error_mjs__WEBPACK_IMPORTED_MODULE_0__/* .CloudflareError */ .Oi(`${name} must be an integer`);
    }
    if (n < 0) {
        throw new _core_error_mjs__WEBPACK_IMPORTED_MODULE_0__/* .CloudflareError */ .Oi(`${name} must be a positive integer`);
    }
    return n;
};
const coerceInteger = (value) => {
    if (typeof value === 'number')
        return Math.round(value);
    if (typeof value === 'string')
        return parseInt(value, 10);
    throw new CloudflareError(`Could not coerce ${value} (type: ${typeof value}) into a number`);
};
const coerceFloat = (value) => {
    if (typeof value === 'number')
        return value;
    if (typeof value === 'string')
        return parseFloat(value);
    throw new CloudflareError(`Could not coerce ${value} (type: ${typeof value}) into a number`);
};
const coerceBoolean = (value) => {
    if (typeof value === 'boolean')
        return value;
    if (typeof value === 'string')
        return value === 'true';
    return Boolean(value);
};
const maybeCoerceInteger = (value) => {
    if (value == null) {
        return undefined;
    }
    return coerceInteger(value);
};
const maybeCoerceFloat = (value) => {
    if (value == null) {
        return undefined;
    }
    return coerceFloat(value);
};
const maybeCoerceBoolean = (value) => {
    if (value == null) {
        return undefined;
    }
    return coerceBoolean(value);
};
const safeJSON = (text) => {
    try {
        return JSON.parse(text);
    }
    catch (err) {
        return undefined;
    }
};
//# sourceMappingURL=values.mjs.map

/***/ }),

/***/ 7565:
/***/ ((__unused_webpack___webpack_module__, __webpack_exports__, __webpack_require__) => {


// EXPORTS
__webpack_require__.d(__webpack_exports__, {
  D: () => (/* binding */ Tokens)
});

// UNUSED EXPORTS: BaseTokens

// EXTERNAL MODULE: ./node_modules/cloudflare/core/resource.mjs
var resource = __webpack_require__(4123);
// EXTERNAL MODULE: ./node_modules/cloudflare/core/pagination.mjs
var pagination = __webpack_require__(8483);
// EXTERNAL MODULE: ./node_modules/cloudflare/internal/utils/path.mjs
var path = __webpack_require__(2);
;// CONCATENATED MODULE: ./node_modules/cloudflare/resources/accounts/tokens/permission-groups.mjs
// File generated from our OpenAPI spec by Stainless. See CONTRIBUTING.md for details.



var BasePermissionGroups = /* @__PURE__ */ (() => {
    class BasePermissionGroups extends resource/* APIResource */.h {
        /**
         * Find all available permission groups for Account Owned API Tokens. Each
         * permission group indicates whether the caller can select it when creating a
         * token. Token creation performs the authoritative permission check.
         *
         * @example
         * ```ts
         * // Automatically fetches more pages as needed.
         * for await (const permissionGroupListResponse of client.accounts.tokens.permissionGroups.list(
         *   { account_id: '023e105f4ecef8ad9ca31a8372d0c353' },
         * )) {
         *   // ...
         * }
         * ```
         */
        list(params, options) {
            const { account_id, ...query } = params;
            return this._client.getAPIList((0,path/* path */.Ae) `/accounts/${account_id}/tokens/permission_groups`, (pagination/* SinglePage */.CR), { query, ...options });
        }
        /**
         * Find all available permission groups for Account Owned API Tokens. Each
         * permission group indicates whether the caller can select it when creating a
         * token. Token creation performs the authoritative permission check.
         *
         * @example
         * ```ts
         * const permissionGroups =
         *   await client.accounts.tokens.permissionGroups.get({
         *     account_id: '023e105f4ecef8ad9ca31a8372d0c353',
         *   });
         * ```
         */
        get(params, options) {
            const { account_id, ...query } = params;
            return this._client.get((0,path/* path */.Ae) `/accounts/${account_id}/tokens/permission_groups`, {
                query,
                ...options,
            })._thenUnwrap((obj) => obj.result);
        }
    }
    BasePermissionGroups._key = Object.freeze([
        'accounts',
        'tokens',
        'permissionGroups',
    ]);
    return BasePermissionGroups;
})();
class PermissionGroups extends BasePermissionGroups {
}
//# sourceMappingURL=permission-groups.mjs.map
;// CONCATENATED MODULE: ./node_modules/cloudflare/resources/accounts/tokens/value.mjs
// File generated from our OpenAPI spec by Stainless. See CONTRIBUTING.md for details.


var BaseValue = /* @__PURE__ */ (() => {
    class BaseValue extends resource/* APIResource */.h {
        /**
         * Roll the Account Owned API token secret.
         *
         * @example
         * ```ts
         * const tokenValue =
         *   await client.accounts.tokens.value.update(
         *     'ed17574386854bf78a67040be0a770b0',
         *     { account_id: '023e105f4ecef8ad9ca31a8372d0c353' },
         *   );
         * ```
         */
        update(tokenID, params, options) {
            const { account_id } = params;
            return this._client.put((0,path/* path */.Ae) `/accounts/${account_id}/tokens/${tokenID}/value`, options)._thenUnwrap((obj) => obj.result);
        }
    }
    BaseValue._key = Object.freeze([
        'accounts',
        'tokens',
        'value',
    ]);
    return BaseValue;
})();
class Value extends BaseValue {
}
//# sourceMappingURL=value.mjs.map
;// CONCATENATED MODULE: ./node_modules/cloudflare/resources/accounts/tokens/tokens.mjs
// File generated from our OpenAPI spec by Stainless. See CONTRIBUTING.md for details.







var BaseTokens = /* @__PURE__ */ (() => {
    class BaseTokens extends resource/* APIResource */.h {
        /**
         * Create a new Account Owned API token.
         *
         * @example
         * ```ts
         * const token = await client.accounts.tokens.create({
         *   account_id: '023e105f4ecef8ad9ca31a8372d0c353',
         *   name: 'readonly token',
         *   policies: [
         *     {
         *       effect: 'allow',
         *       permission_groups: [
         *         { id: 'c8fed203ed3043cba015a93ad1616f1f' },
         *         { id: '82e64a83756745bbbb1c9c2701bf816b' },
         *       ],
         *       resources: {
         *         'com.cloudflare.api.account.zone.22b1de5f1c0e4b3ea97bb1e963b06a43':
         *           '*',
         *       },
         *     },
         *   ],
         * });
         * ```
         */
        create(params, options) {
            const { account_id, ...body } = params;
            return this._client.post((0,path/* path */.Ae) `/accounts/${account_id}/tokens`, { body, ...options })._thenUnwrap((obj) => obj.result);
        }
        /**
         * Update an existing token.
         *
         * @example
         * ```ts
         * const token = await client.accounts.tokens.update(
         *   'ed17574386854bf78a67040be0a770b0',
         *   {
         *     account_id: '023e105f4ecef8ad9ca31a8372d0c353',
         *     name: 'readonly token',
         *     policies: [
         *       {
         *         effect: 'allow',
         *         permission_groups: [
         *           { id: 'c8fed203ed3043cba015a93ad1616f1f' },
         *           { id: '82e64a83756745bbbb1c9c2701bf816b' },
         *         ],
         *         resources: {
         *           'com.cloudflare.api.account.zone.22b1de5f1c0e4b3ea97bb1e963b06a43':
         *             '*',
         *         },
         *       },
         *     ],
         *   },
         * );
         * ```
         */
        update(tokenID, params, options) {
            const { account_id, ...body } = params;
            return this._client.put((0,path/* path */.Ae) `/accounts/${account_id}/tokens/${tokenID}`, { body, ...options })._thenUnwrap((obj) => obj.result);
        }
        /**
         * List Account Owned API tokens created for this account. Callers with
         * `com.cloudflare.api.account.token.list_self` permission only receive tokens they
         * created. Results include active, disabled, and recently-expired tokens when
         * `include_expired` is set to true.
         *
         * @example
         * ```ts
         * // Automatically fetches more pages as needed.
         * for await (const token of client.accounts.tokens.list({
         *   account_id: '023e105f4ecef8ad9ca31a8372d0c353',
         * })) {
         *   // ...
         * }
         * ```
         */
        list(params, options) {
            const { account_id, ...query } = params;
            return this._client.getAPIList((0,path/* path */.Ae) `/accounts/${account_id}/tokens`, (pagination/* V4PagePaginationArray */.$9), { query, ...options });
        }
        /**
         * Destroy an Account Owned API token.
         *
         * @example
         * ```ts
         * const token = await client.accounts.tokens.delete(
         *   'ed17574386854bf78a67040be0a770b0',
         *   { account_id: '023e105f4ecef8ad9ca31a8372d0c353' },
         * );
         * ```
         */
        delete(tokenID, params, options) {
            const { account_id } = params;
            return this._client.delete((0,path/* path */.Ae) `/accounts/${account_id}/tokens/${tokenID}`, options)._thenUnwrap((obj) => obj.result);
        }
        /**
         * Get information about a specific Account Owned API token.
         *
         * @example
         * ```ts
         * const token = await client.accounts.tokens.get(
         *   'ed17574386854bf78a67040be0a770b0',
         *   { account_id: '023e105f4ecef8ad9ca31a8372d0c353' },
         * );
         * ```
         */
        get(tokenID, params, options) {
            const { account_id } = params;
            return this._client.get((0,path/* path */.Ae) `/accounts/${account_id}/tokens/${tokenID}`, options)._thenUnwrap((obj) => obj.result);
        }
        /**
         * Test whether a token works.
         *
         * @example
         * ```ts
         * const response = await client.accounts.tokens.verify({
         *   account_id: '023e105f4ecef8ad9ca31a8372d0c353',
         * });
         * ```
         */
        verify(params, options) {
            const { account_id } = params;
            return this._client.get((0,path/* path */.Ae) `/accounts/${account_id}/tokens/verify`, options)._thenUnwrap((obj) => obj.result);
        }
    }
    BaseTokens._key = Object.freeze([
        'accounts',
        'tokens',
    ]);
    return BaseTokens;
})();
var Tokens = /* @__PURE__ */ (() => {
    class Tokens extends BaseTokens {
        constructor() {
            super(...arguments);
            this.permissionGroups = new PermissionGroups(this._client);
            this.value = new Value(this._client);
        }
    }
    Tokens.PermissionGroups = PermissionGroups;
    Tokens.BasePermissionGroups = BasePermissionGroups;
    Tokens.Value = Value;
    Tokens.BaseValue = BaseValue;
    return Tokens;
})();
//# sourceMappingURL=tokens.mjs.map

/***/ }),

/***/ 3934:
/***/ ((__unused_webpack___webpack_module__, __webpack_exports__, __webpack_require__) => {


// EXPORTS
__webpack_require__.d(__webpack_exports__, {
  D: () => (/* binding */ Tokens)
});

// UNUSED EXPORTS: BaseTokens

// EXTERNAL MODULE: ./node_modules/cloudflare/core/resource.mjs
var resource = __webpack_require__(4123);
// EXTERNAL MODULE: ./node_modules/cloudflare/core/pagination.mjs
var pagination = __webpack_require__(8483);
;// CONCATENATED MODULE: ./node_modules/cloudflare/resources/user/tokens/permission-groups.mjs
// File generated from our OpenAPI spec by Stainless. See CONTRIBUTING.md for details.


var BasePermissionGroups = /* @__PURE__ */ (() => {
    class BasePermissionGroups extends resource/* APIResource */.h {
        /**
         * Find all available permission groups for API Tokens.
         *
         * @example
         * ```ts
         * // Automatically fetches more pages as needed.
         * for await (const permissionGroupListResponse of client.user.tokens.permissionGroups.list()) {
         *   // ...
         * }
         * ```
         */
        list(query = {}, options) {
            return this._client.getAPIList('/user/tokens/permission_groups', (pagination/* SinglePage */.CR), { query, ...options });
        }
    }
    BasePermissionGroups._key = Object.freeze([
        'user',
        'tokens',
        'permissionGroups',
    ]);
    return BasePermissionGroups;
})();
class PermissionGroups extends BasePermissionGroups {
}
//# sourceMappingURL=permission-groups.mjs.map
// EXTERNAL MODULE: ./node_modules/cloudflare/internal/utils/path.mjs
var path = __webpack_require__(2);
;// CONCATENATED MODULE: ./node_modules/cloudflare/resources/user/tokens/value.mjs
// File generated from our OpenAPI spec by Stainless. See CONTRIBUTING.md for details.


var BaseValue = /* @__PURE__ */ (() => {
    class BaseValue extends resource/* APIResource */.h {
        /**
         * Roll the token secret.
         *
         * @example
         * ```ts
         * const tokenValue = await client.user.tokens.value.update(
         *   'ed17574386854bf78a67040be0a770b0',
         * );
         * ```
         */
        update(tokenID, options) {
            return this._client.put((0,path/* path */.Ae) `/user/tokens/${tokenID}/value`, options)._thenUnwrap((obj) => obj.result);
        }
    }
    BaseValue._key = Object.freeze([
        'user',
        'tokens',
        'value',
    ]);
    return BaseValue;
})();
class Value extends BaseValue {
}
//# sourceMappingURL=value.mjs.map
;// CONCATENATED MODULE: ./node_modules/cloudflare/resources/user/tokens/tokens.mjs
// File generated from our OpenAPI spec by Stainless. See CONTRIBUTING.md for details.







var BaseTokens = /* @__PURE__ */ (() => {
    class BaseTokens extends resource/* APIResource */.h {
        /**
         * Create a new access token.
         *
         * @example
         * ```ts
         * const token = await client.user.tokens.create({
         *   name: 'readonly token',
         *   policies: [
         *     {
         *       effect: 'allow',
         *       permission_groups: [
         *         { id: 'c8fed203ed3043cba015a93ad1616f1f' },
         *         { id: '82e64a83756745bbbb1c9c2701bf816b' },
         *       ],
         *       resources: {
         *         'com.cloudflare.api.account.zone.22b1de5f1c0e4b3ea97bb1e963b06a43':
         *           '*',
         *       },
         *     },
         *   ],
         * });
         * ```
         */
        create(body, options) {
            return this._client.post('/user/tokens', { body, ...options })._thenUnwrap((obj) => obj.result);
        }
        /**
         * Update an existing token.
         *
         * @example
         * ```ts
         * const token = await client.user.tokens.update(
         *   'ed17574386854bf78a67040be0a770b0',
         *   {
         *     name: 'readonly token',
         *     policies: [
         *       {
         *         effect: 'allow',
         *         permission_groups: [
         *           { id: 'c8fed203ed3043cba015a93ad1616f1f' },
         *           { id: '82e64a83756745bbbb1c9c2701bf816b' },
         *         ],
         *         resources: {
         *           'com.cloudflare.api.account.zone.22b1de5f1c0e4b3ea97bb1e963b06a43':
         *             '*',
         *         },
         *       },
         *     ],
         *   },
         * );
         * ```
         */
        update(tokenID, body, options) {
            return this._client.put((0,path/* path */.Ae) `/user/tokens/${tokenID}`, { body, ...options })._thenUnwrap((obj) => obj.result);
        }
        /**
         * List all access tokens you created. Results include active, disabled, and
         * recently-expired tokens when include_expired is set to true.
         *
         * @example
         * ```ts
         * // Automatically fetches more pages as needed.
         * for await (const token of client.user.tokens.list()) {
         *   // ...
         * }
         * ```
         */
        list(query = {}, options) {
            return this._client.getAPIList('/user/tokens', (pagination/* V4PagePaginationArray */.$9), {
                query,
                ...options,
            });
        }
        /**
         * Destroy a token.
         *
         * @example
         * ```ts
         * const token = await client.user.tokens.delete(
         *   'ed17574386854bf78a67040be0a770b0',
         * );
         * ```
         */
        delete(tokenID, options) {
            return this._client.delete((0,path/* path */.Ae) `/user/tokens/${tokenID}`, options)._thenUnwrap((obj) => obj.result);
        }
        /**
         * Get information about a specific token.
         *
         * @example
         * ```ts
         * const token = await client.user.tokens.get(
         *   'ed17574386854bf78a67040be0a770b0',
         * );
         * ```
         */
        get(tokenID, options) {
            return this._client.get((0,path/* path */.Ae) `/user/tokens/${tokenID}`, options)._thenUnwrap((obj) => obj.result);
        }
        /**
         * Test whether a token works.
         *
         * @example
         * ```ts
         * const response = await client.user.tokens.verify();
         * ```
         */
        verify(options) {
            return this._client.get('/user/tokens/verify', options)._thenUnwrap((obj) => obj.result);
        }
    }
    BaseTokens._key = Object.freeze(['user', 'tokens']);
    return BaseTokens;
})();
var Tokens = /* @__PURE__ */ (() => {
    class Tokens extends BaseTokens {
        constructor() {
            super(...arguments);
            this.permissionGroups = new PermissionGroups(this._client);
            this.value = new Value(this._client);
        }
    }
    Tokens.PermissionGroups = PermissionGroups;
    Tokens.BasePermissionGroups = BasePermissionGroups;
    Tokens.Value = Value;
    Tokens.BaseValue = BaseValue;
    return Tokens;
})();
//# sourceMappingURL=tokens.mjs.map

/***/ }),

/***/ 324:
/***/ ((__unused_webpack___webpack_module__, __webpack_exports__, __webpack_require__) => {

/* harmony export */ __webpack_require__.d(__webpack_exports__, {
/* harmony export */   M: () => (/* binding */ BaseDeployments)
/* harmony export */ });
/* unused harmony export Deployments */
/* harmony import */ var _core_resource_mjs__WEBPACK_IMPORTED_MODULE_0__ = __webpack_require__(4123);
/* harmony import */ var _core_pagination_mjs__WEBPACK_IMPORTED_MODULE_2__ = __webpack_require__(8483);
/* harmony import */ var _internal_utils_path_mjs__WEBPACK_IMPORTED_MODULE_1__ = __webpack_require__(2);
// File generated from our OpenAPI spec by Stainless. See CONTRIBUTING.md for details.



var BaseDeployments = /* @__PURE__ */ (() => {
    class BaseDeployments extends _core_resource_mjs__WEBPACK_IMPORTED_MODULE_0__/* .APIResource */ .h {
        /**
         * Deployments configure how
         * [Worker Versions](https://developers.cloudflare.com/api/operations/worker-versions-list-versions)
         * are deployed to traffic. A deployment can consist of multiple versions of a
         * Worker.
         *
         * @example
         * ```ts
         * const deployment =
         *   await client.workers.scripts.deployments.create(
         *     'this-is_my_script-01',
         *     {
         *       account_id: '023e105f4ecef8ad9ca31a8372d0c353',
         *       strategy: 'percentage',
         *       versions: [
         *         {
         *           percentage: 100,
         *           version_id:
         *             '023e105f-2a42-4f8b-a1c1-73f6a2a30c0f',
         *         },
         *       ],
         *     },
         *   );
         * ```
         */
        create(scriptName, params, options) {
            const { account_id, force, ...body } = params;
            return this._client.post((0,_internal_utils_path_mjs__WEBPACK_IMPORTED_MODULE_1__/* .path */ .Ae) `/accounts/${account_id}/workers/scripts/${scriptName}/deployments`, {
                query: { force },
                body,
                ...options,
            })._thenUnwrap((obj) => obj.result);
        }
        /**
         * List Worker deployments. The first deployment in the list is the latest
         * deployment actively serving traffic.
         *
         * @example
         * ```ts
         * // Automatically fetches more pages as needed.
         * for await (const deploymentListResponse of client.workers.scripts.deployments.list(
         *   'this-is_my_script-01',
         *   { account_id: '023e105f4ecef8ad9ca31a8372d0c353' },
         * )) {
         *   // ...
         * }
         * ```
         */
        list(scriptName, params, options) {
            const { account_id, ...query } = params;
            return this._client.getAPIList((0,_internal_utils_path_mjs__WEBPACK_IMPORTED_MODULE_1__/* .path */ .Ae) `/accounts/${account_id}/workers/scripts/${scriptName}/deployments`, (_core_pagination_mjs__WEBPACK_IMPORTED_MODULE_2__/* .V4PagePagination */ .mu), { query, ...options });
        }
        /**
         * Delete a Worker Deployment. The latest deployment, which is actively serving
         * traffic, cannot be deleted. All other deployments can be deleted.
         *
         * @example
         * ```ts
         * const deployment =
         *   await client.workers.scripts.deployments.delete(
         *     '182bd5e5-6e1a-4fe4-a799-aa6d9a6ab26e',
         *     {
         *       account_id: '023e105f4ecef8ad9ca31a8372d0c353',
         *       script_name: 'this-is_my_script-01',
         *     },
         *   );
         * ```
         */
        delete(deploymentID, params, options) {
            const { account_id, script_name } = params;
            return this._client.delete((0,_internal_utils_path_mjs__WEBPACK_IMPORTED_MODULE_1__/* .path */ .Ae) `/accounts/${account_id}/workers/scripts/${script_name}/deployments/${deploymentID}`, options);
        }
        /**
         * Get information about a Worker Deployment.
         *
         * @example
         * ```ts
         * const deployment =
         *   await client.workers.scripts.deployments.get(
         *     '182bd5e5-6e1a-4fe4-a799-aa6d9a6ab26e',
         *     {
         *       account_id: '023e105f4ecef8ad9ca31a8372d0c353',
         *       script_name: 'this-is_my_script-01',
         *     },
         *   );
         * ```
         */
        get(deploymentID, params, options) {
            const { account_id, script_name } = params;
            return this._client.get((0,_internal_utils_path_mjs__WEBPACK_IMPORTED_MODULE_1__/* .path */ .Ae) `/accounts/${account_id}/workers/scripts/${script_name}/deployments/${deploymentID}`, options)._thenUnwrap((obj) => obj.result);
        }
    }
    BaseDeployments._key = Object.freeze([
        'workers',
        'scripts',
        'deployments',
    ]);
    return BaseDeployments;
})();
class Deployments extends (/* unused pure expression or super */ null && (BaseDeployments)) {
}
//# sourceMappingURL=deployments.mjs.map

/***/ }),

/***/ 1223:
/***/ ((__unused_webpack___webpack_module__, __webpack_exports__, __webpack_require__) => {

/* harmony export */ __webpack_require__.d(__webpack_exports__, {
/* harmony export */   j: () => (/* binding */ BaseSecrets)
/* harmony export */ });
/* unused harmony export Secrets */
/* harmony import */ var _core_resource_mjs__WEBPACK_IMPORTED_MODULE_0__ = __webpack_require__(4123);
/* harmony import */ var _core_pagination_mjs__WEBPACK_IMPORTED_MODULE_2__ = __webpack_require__(8483);
/* harmony import */ var _internal_utils_path_mjs__WEBPACK_IMPORTED_MODULE_1__ = __webpack_require__(2);
// File generated from our OpenAPI spec by Stainless. See CONTRIBUTING.md for details.



var BaseSecrets = /* @__PURE__ */ (() => {
    class BaseSecrets extends _core_resource_mjs__WEBPACK_IMPORTED_MODULE_0__/* .APIResource */ .h {
        /**
         * Add a secret to a Worker script by creating a new version with that secret.
         *
         * When changing more than one secret at a time, prefer the "Patch multiple script
         * secrets" API instead of changing many secrets individually.
         *
         * @example
         * ```ts
         * const secret = await client.workers.scripts.secrets.update(
         *   'this-is_my_script-01',
         *   {
         *     account_id: '023e105f4ecef8ad9ca31a8372d0c353',
         *     name: 'myBinding',
         *     text: 'My secret.',
         *     type: 'secret_text',
         *   },
         * );
         * ```
         */
        update(scriptName, params, options) {
            const { account_id, ...body } = params;
            return this._client.put((0,_internal_utils_path_mjs__WEBPACK_IMPORTED_MODULE_1__/* .path */ .Ae) `/accounts/${account_id}/workers/scripts/${scriptName}/secrets`, {
                body,
                ...options,
            })._thenUnwrap((obj) => obj.result);
        }
        /**
         * List the names of secrets bound to a Worker script.
         *
         * @example
         * ```ts
         * // Automatically fetches more pages as needed.
         * for await (const secretListResponse of client.workers.scripts.secrets.list(
         *   'this-is_my_script-01',
         *   { account_id: '023e105f4ecef8ad9ca31a8372d0c353' },
         * )) {
         *   // ...
         * }
         * ```
         */
        list(scriptName, params, options) {
            const { account_id } = params;
            return this._client.getAPIList((0,_internal_utils_path_mjs__WEBPACK_IMPORTED_MODULE_1__/* .path */ .Ae) `/accounts/${account_id}/workers/scripts/${scriptName}/secrets`, (_core_pagination_mjs__WEBPACK_IMPORTED_MODULE_2__/* .SinglePage */ .CR), options);
        }
        /**
         * Remove a secret from a Worker script by creating a new version without that
         * secret.
         *
         * When changing more than one secret at a time, prefer the "Patch multiple script
         * secrets" API instead of changing many secrets individually.
         *
         * @example
         * ```ts
         * const secret = await client.workers.scripts.secrets.delete(
         *   'mySecret',
         *   {
         *     account_id: '023e105f4ecef8ad9ca31a8372d0c353',
         *     script_name: 'this-is_my_script-01',
         *   },
         * );
         * ```
         */
        delete(secretName, params, options) {
            const { account_id, script_name, url_encoded } = params;
            return this._client.delete((0,_internal_utils_path_mjs__WEBPACK_IMPORTED_MODULE_1__/* .path */ .Ae) `/accounts/${account_id}/workers/scripts/${script_name}/secrets/${secretName}`, { query: { url_encoded }, ...options })._thenUnwrap((obj) => obj.result);
        }
        /**
         * Create, update, or delete multiple secrets on a Worker script in a single
         * operation using JSON Merge Patch (RFC 7396). This operation creates a single
         * version with all changes included. Prefer this API instead of changing many
         * secrets individually.
         *
         * Usage:
         *
         * - To create or update a secret, set its value to a secret object.
         * - To delete a secret, set its value to `null`.
         * - Secrets not included in the request are left unchanged.
         *
         * @example
         * ```ts
         * const response =
         *   await client.workers.scripts.secrets.bulkUpdate(
         *     'this-is_my_script-01',
         *     { account_id: '023e105f4ecef8ad9ca31a8372d0c353' },
         *   );
         * ```
         */
        bulkUpdate(scriptName, params, options) {
            const { account_id, ...body } = params;
            return this._client.patch((0,_internal_utils_path_mjs__WEBPACK_IMPORTED_MODULE_1__/* .path */ .Ae) `/accounts/${account_id}/workers/scripts/${scriptName}/secrets-bulk`, {
                body,
                ...options,
            })._thenUnwrap((obj) => obj.result);
        }
        /**
         * Get a given secret binding (value omitted) on a Worker script.
         *
         * @example
         * ```ts
         * const secret = await client.workers.scripts.secrets.get(
         *   'mySecret',
         *   {
         *     account_id: '023e105f4ecef8ad9ca31a8372d0c353',
         *     script_name: 'this-is_my_script-01',
         *   },
         * );
         * ```
         */
        get(secretName, params, options) {
            const { account_id, script_name, ...query } = params;
            return this._client.get((0,_internal_utils_path_mjs__WEBPACK_IMPORTED_MODULE_1__/* .path */ .Ae) `/accounts/${account_id}/workers/scripts/${script_name}/secrets/${secretName}`, {
                query,
                ...options,
            })._thenUnwrap((obj) => obj.result);
        }
    }
    BaseSecrets._key = Object.freeze([
        'workers',
        'scripts',
        'secrets',
    ]);
    return BaseSecrets;
})();
class Secrets extends (/* unused pure expression or super */ null && (BaseSecrets)) {
}
//# sourceMappingURL=secrets.mjs.map

/***/ }),

/***/ 6460:
/***/ ((__unused_webpack___webpack_module__, __webpack_exports__, __webpack_require__) => {

/* harmony export */ __webpack_require__.d(__webpack_exports__, {
/* harmony export */   t: () => (/* binding */ BaseServiceTokens)
/* harmony export */ });
/* unused harmony export ServiceTokens */
/* harmony import */ var _core_resource_mjs__WEBPACK_IMPORTED_MODULE_0__ = __webpack_require__(4123);
/* harmony import */ var _core_error_mjs__WEBPACK_IMPORTED_MODULE_1__ = __webpack_require__(831);
/* harmony import */ var _core_pagination_mjs__WEBPACK_IMPORTED_MODULE_3__ = __webpack_require__(8483);
/* harmony import */ var _internal_utils_path_mjs__WEBPACK_IMPORTED_MODULE_2__ = __webpack_require__(2);
// File generated from our OpenAPI spec by Stainless. See CONTRIBUTING.md for details.




var BaseServiceTokens = /* @__PURE__ */ (() => {
    class BaseServiceTokens extends _core_resource_mjs__WEBPACK_IMPORTED_MODULE_0__/* .APIResource */ .h {
        /**
         * Generates a new service token. **Note:** This is the only time you can get the
         * Client Secret. If you lose the Client Secret, you will have to rotate the Client
         * Secret or create a new service token.
         *
         * @example
         * ```ts
         * const serviceToken =
         *   await client.zeroTrust.access.serviceTokens.create({
         *     name: 'CI/CD token',
         *     account_id: 'account_id',
         *   });
         * ```
         */
        create(params, options) {
            const { account_id, zone_id, ...body } = params;
            if (!account_id && !zone_id) {
                throw new _core_error_mjs__WEBPACK_IMPORTED_MODULE_1__/* .CloudflareError */ .Oi('You must provide either account_id or zone_id.');
            }
            if (account_id && zone_id) {
                throw new _core_error_mjs__WEBPACK_IMPORTED_MODULE_1__/* .CloudflareError */ .Oi('You cannot provide both account_id and zone_id.');
            }
            const { accountOrZone, accountOrZoneId } = account_id ?
                {
                    accountOrZone: 'accounts',
                    accountOrZoneId: account_id,
                }
                : {
                    accountOrZone: 'zones',
                    accountOrZoneId: zone_id,
                };
            return this._client.post((0,_internal_utils_path_mjs__WEBPACK_IMPORTED_MODULE_2__/* .path */ .Ae) `/${accountOrZone}/${accountOrZoneId}/access/service_tokens`, {
                body,
                ...options,
            })._thenUnwrap((obj) => obj.result);
        }
        /**
         * Updates a configured service token.
         *
         * @example
         * ```ts
         * const serviceToken =
         *   await client.zeroTrust.access.serviceTokens.update(
         *     'f174e90a-fafe-4643-bbbc-4a0ed4fc8415',
         *     { account_id: 'account_id' },
         *   );
         * ```
         */
        update(serviceTokenID, params, options) {
            const { account_id, zone_id, ...body } = params;
            if (!account_id && !zone_id) {
                throw new _core_error_mjs__WEBPACK_IMPORTED_MODULE_1__/* .CloudflareError */ .Oi('You must provide either account_id or zone_id.');
            }
            if (account_id && zone_id) {
                throw new _core_error_mjs__WEBPACK_IMPORTED_MODULE_1__/* .CloudflareError */ .Oi('You cannot provide both account_id and zone_id.');
            }
            const { accountOrZone, accountOrZoneId } = account_id ?
                {
                    accountOrZone: 'accounts',
                    accountOrZoneId: account_id,
                }
                : {
                    accountOrZone: 'zones',
                    accountOrZoneId: zone_id,
                };
            return this._client.put((0,_internal_utils_path_mjs__WEBPACK_IMPORTED_MODULE_2__/* .path */ .Ae) `/${accountOrZone}/${accountOrZoneId}/access/service_tokens/${serviceTokenID}`, {
                body,
                ...options,
            })._thenUnwrap((obj) => obj.result);
        }
        /**
         * Lists all service tokens.
         *
         * @example
         * ```ts
         * // Automatically fetches more pages as needed.
         * for await (const serviceToken of client.zeroTrust.access.serviceTokens.list(
         *   { account_id: 'account_id' },
         * )) {
         *   // ...
         * }
         * ```
         */
        list(params = {}, options) {
            const { account_id, zone_id, ...query } = params ?? {};
            if (!account_id && !zone_id) {
                throw new _core_error_mjs__WEBPACK_IMPORTED_MODULE_1__/* .CloudflareError */ .Oi('You must provide either account_id or zone_id.');
            }
            if (account_id && zone_id) {
                throw new _core_error_mjs__WEBPACK_IMPORTED_MODULE_1__/* .CloudflareError */ .Oi('You cannot provide both account_id and zone_id.');
            }
            const { accountOrZone, accountOrZoneId } = account_id ?
                {
                    accountOrZone: 'accounts',
                    accountOrZoneId: account_id,
                }
                : {
                    accountOrZone: 'zones',
                    accountOrZoneId: zone_id,
                };
            return this._client.getAPIList((0,_internal_utils_path_mjs__WEBPACK_IMPORTED_MODULE_2__/* .path */ .Ae) `/${accountOrZone}/${accountOrZoneId}/access/service_tokens`, (_core_pagination_mjs__WEBPACK_IMPORTED_MODULE_3__/* .V4PagePaginationArray */ .$9), { query, ...options });
        }
        /**
         * Deletes a service token.
         *
         * @example
         * ```ts
         * const serviceToken =
         *   await client.zeroTrust.access.serviceTokens.delete(
         *     'f174e90a-fafe-4643-bbbc-4a0ed4fc8415',
         *     { account_id: 'account_id' },
         *   );
         * ```
         */
        delete(serviceTokenID, params = {}, options) {
            const { account_id, zone_id } = params ?? {};
            if (!account_id && !zone_id) {
                throw new _core_error_mjs__WEBPACK_IMPORTED_MODULE_1__/* .CloudflareError */ .Oi('You must provide either account_id or zone_id.');
            }
            if (account_id && zone_id) {
                throw new _core_error_mjs__WEBPACK_IMPORTED_MODULE_1__/* .CloudflareError */ .Oi('You cannot provide both account_id and zone_id.');
            }
            const { accountOrZone, accountOrZoneId } = account_id ?
                {
                    accountOrZone: 'accounts',
                    accountOrZoneId: account_id,
                }
                : {
                    accountOrZone: 'zones',
                    accountOrZoneId: zone_id,
                };
            return this._client.delete((0,_internal_utils_path_mjs__WEBPACK_IMPORTED_MODULE_2__/* .path */ .Ae) `/${accountOrZone}/${accountOrZoneId}/access/service_tokens/${serviceTokenID}`, options)._thenUnwrap((obj) => obj.result);
        }
        /**
         * Fetches a single service token.
         *
         * @example
         * ```ts
         * const serviceToken =
         *   await client.zeroTrust.access.serviceTokens.get(
         *     'f174e90a-fafe-4643-bbbc-4a0ed4fc8415',
         *     { account_id: 'account_id' },
         *   );
         * ```
         */
        get(serviceTokenID, params = {}, options) {
            const { account_id, zone_id } = params ?? {};
            if (!account_id && !zone_id) {
                throw new _core_error_mjs__WEBPACK_IMPORTED_MODULE_1__/* .CloudflareError */ .Oi('You must provide either account_id or zone_id.');
            }
            if (account_id && zone_id) {
                throw new _core_error_mjs__WEBPACK_IMPORTED_MODULE_1__/* .CloudflareError */ .Oi('You cannot provide both account_id and zone_id.');
            }
            const { accountOrZone, accountOrZoneId } = account_id ?
                {
                    accountOrZone: 'accounts',
                    accountOrZoneId: account_id,
                }
                : {
                    accountOrZone: 'zones',
                    accountOrZoneId: zone_id,
                };
            return this._client.get((0,_internal_utils_path_mjs__WEBPACK_IMPORTED_MODULE_2__/* .path */ .Ae) `/${accountOrZone}/${accountOrZoneId}/access/service_tokens/${serviceTokenID}`, options)._thenUnwrap((obj) => obj.result);
        }
        /**
         * Refreshes the expiration of a service token.
         *
         * @example
         * ```ts
         * const serviceToken =
         *   await client.zeroTrust.access.serviceTokens.refresh(
         *     'f174e90a-fafe-4643-bbbc-4a0ed4fc8415',
         *     { account_id: '023e105f4ecef8ad9ca31a8372d0c353' },
         *   );
         * ```
         */
        refresh(serviceTokenID, params, options) {
            const { account_id } = params;
            return this._client.post((0,_internal_utils_path_mjs__WEBPACK_IMPORTED_MODULE_2__/* .path */ .Ae) `/accounts/${account_id}/access/service_tokens/${serviceTokenID}/refresh`, options)._thenUnwrap((obj) => obj.result);
        }
        /**
         * Generates a new Client Secret for a service token and revokes the old one.
         *
         * @example
         * ```ts
         * const response =
         *   await client.zeroTrust.access.serviceTokens.rotate(
         *     'f174e90a-fafe-4643-bbbc-4a0ed4fc8415',
         *     { account_id: '023e105f4ecef8ad9ca31a8372d0c353' },
         *   );
         * ```
         */
        rotate(serviceTokenID, params, options) {
            const { account_id, ...body } = params;
            return this._client.post((0,_internal_utils_path_mjs__WEBPACK_IMPORTED_MODULE_2__/* .path */ .Ae) `/accounts/${account_id}/access/service_tokens/${serviceTokenID}/rotate`, {
                body,
                ...options,
            })._thenUnwrap((obj) => obj.result);
        }
    }
    BaseServiceTokens._key = Object.freeze([
        'zeroTrust',
        'access',
        'serviceTokens',
    ]);
    return BaseServiceTokens;
})();
class ServiceTokens extends (/* unused pure expression or super */ null && (BaseServiceTokens)) {
}
//# sourceMappingURL=service-tokens.mjs.map

/***/ }),

/***/ 3151:
/***/ ((__unused_webpack___webpack_module__, __webpack_exports__, __webpack_require__) => {


// EXPORTS
__webpack_require__.d(__webpack_exports__, {
  U: () => (/* binding */ createClient)
});

// EXTERNAL MODULE: ./node_modules/cloudflare/internal/tslib.mjs
var tslib = __webpack_require__(7235);
;// CONCATENATED MODULE: ./node_modules/cloudflare/internal/utils/uuid.mjs
// File generated from our OpenAPI spec by Stainless. See CONTRIBUTING.md for details.
/**
 * https://stackoverflow.com/a/2117523
 */
let uuid4 = function () {
    const { crypto } = globalThis;
    if (crypto?.randomUUID) {
        uuid4 = crypto.randomUUID.bind(crypto);
        return crypto.randomUUID();
    }
    const u8 = new Uint8Array(1);
    const randomByte = crypto ? () => crypto.getRandomValues(u8)[0] : () => (Math.random() * 0xff) & 0xff;
    return '10000000-1000-4000-8000-100000000000'.replace(/[018]/g, (c) => (+c ^ (randomByte() & (15 >> (+c / 4)))).toString(16));
};
//# sourceMappingURL=uuid.mjs.map
// EXTERNAL MODULE: ./node_modules/cloudflare/internal/utils/values.mjs
var utils_values = __webpack_require__(3797);
;// CONCATENATED MODULE: ./node_modules/cloudflare/internal/utils/sleep.mjs
// File generated from our OpenAPI spec by Stainless. See CONTRIBUTING.md for details.
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
//# sourceMappingURL=sleep.mjs.map
// EXTERNAL MODULE: ./node_modules/cloudflare/internal/errors.mjs
var errors = __webpack_require__(8996);
;// CONCATENATED MODULE: ./node_modules/cloudflare/version.mjs
const VERSION = '7.3.0'; // x-release-please-version
const API_VERSION = '';
//# sourceMappingURL=version.mjs.map
;// CONCATENATED MODULE: ./node_modules/cloudflare/internal/detect-platform.mjs
// File generated from our OpenAPI spec by Stainless. See CONTRIBUTING.md for details.

const isRunningInBrowser = () => {
    return (
    // @ts-ignore
    typeof window !== 'undefined' &&
        // @ts-ignore
        typeof window.document !== 'undefined' &&
        // @ts-ignore
        typeof navigator !== 'undefined');
};
/**
 * Note this does not detect 'browser'; for that, use getBrowserInfo().
 */
function getDetectedPlatform() {
    if (typeof Deno !== 'undefined' && Deno.build != null) {
        return 'deno';
    }
    if (typeof EdgeRuntime !== 'undefined') {
        return 'edge';
    }
    if (Object.prototype.toString.call(typeof globalThis.process !== 'undefined' ? globalThis.process : 0) === '[object process]') {
        return 'node';
    }
    return 'unknown';
}
const getPlatformProperties = () => {
    const detectedPlatform = getDetectedPlatform();
    if (detectedPlatform === 'deno') {
        return {
            'X-Stainless-Lang': 'js',
            'X-Stainless-Package-Version': VERSION,
            'X-Stainless-OS': normalizePlatform(Deno.build.os),
            'X-Stainless-Arch': normalizeArch(Deno.build.arch),
            'X-Stainless-Runtime': 'deno',
            'X-Stainless-Runtime-Version': typeof Deno.version === 'string' ? Deno.version : Deno.version?.deno ?? 'unknown',
        };
    }
    if (typeof EdgeRuntime !== 'undefined') {
        return {
            'X-Stainless-Lang': 'js',
            'X-Stainless-Package-Version': VERSION,
            'X-Stainless-OS': 'Unknown',
            'X-Stainless-Arch': `other:${EdgeRuntime}`,
            'X-Stainless-Runtime': 'edge',
            'X-Stainless-Runtime-Version': globalThis.process.version,
        };
    }
    // Check if Node.js
    if (detectedPlatform === 'node') {
        return {
            'X-Stainless-Lang': 'js',
            'X-Stainless-Package-Version': VERSION,
            'X-Stainless-OS': normalizePlatform(globalThis.process.platform ?? 'unknown'),
            'X-Stainless-Arch': normalizeArch(globalThis.process.arch ?? 'unknown'),
            'X-Stainless-Runtime': 'node',
            'X-Stainless-Runtime-Version': globalThis.process.version ?? 'unknown',
        };
    }
    const browserInfo = getBrowserInfo();
    if (browserInfo) {
        return {
            'X-Stainless-Lang': 'js',
            'X-Stainless-Package-Version': VERSION,
            'X-Stainless-OS': 'Unknown',
            'X-Stainless-Arch': 'unknown',
            'X-Stainless-Runtime': `browser:${browserInfo.browser}`,
            'X-Stainless-Runtime-Version': browserInfo.version,
        };
    }
    // TODO add support for Cloudflare workers, etc.
    return {
        'X-Stainless-Lang': 'js',
        'X-Stainless-Package-Version': VERSION,
        'X-Stainless-OS': 'Unknown',
        'X-Stainless-Arch': 'unknown',
        'X-Stainless-Runtime': 'unknown',
        'X-Stainless-Runtime-Version': 'unknown',
    };
};
// Note: modified from https://github.com/JS-DevTools/host-environment/blob/b1ab79ecde37db5d6e163c050e54fe7d287d7c92/src/isomorphic.browser.ts
function getBrowserInfo() {
    if (typeof navigator === 'undefined' || !navigator) {
        return null;
    }
    // NOTE: The order matters here!
    const browserPatterns = [
        { key: 'edge', pattern: /Edge(?:\W+(\d+)\.(\d+)(?:\.(\d+))?)?/ },
        { key: 'ie', pattern: /MSIE(?:\W+(\d+)\.(\d+)(?:\.(\d+))?)?/ },
        { key: 'ie', pattern: /Trident(?:.*rv\:(\d+)\.(\d+)(?:\.(\d+))?)?/ },
        { key: 'chrome', pattern: /Chrome(?:\W+(\d+)\.(\d+)(?:\.(\d+))?)?/ },
        { key: 'firefox', pattern: /Firefox(?:\W+(\d+)\.(\d+)(?:\.(\d+))?)?/ },
        { key: 'safari', pattern: /(?:Version\W+(\d+)\.(\d+)(?:\.(\d+))?)?(?:\W+Mobile\S*)?\W+Safari/ },
    ];
    // Find the FIRST matching browser
    for (const { key, pattern } of browserPatterns) {
        const match = pattern.exec(navigator.userAgent);
        if (match) {
            const major = match[1] || 0;
            const minor = match[2] || 0;
            const patch = match[3] || 0;
            return { browser: key, version: `${major}.${minor}.${patch}` };
        }
    }
    return null;
}
const normalizeArch = (arch) => {
    // Node docs:
    // - https://nodejs.org/api/process.html#processarch
    // Deno docs:
    // - https://doc.deno.land/deno/stable/~/Deno.build
    if (arch === 'x32')
        return 'x32';
    if (arch === 'x86_64' || arch === 'x64')
        return 'x64';
    if (arch === 'arm')
        return 'arm';
    if (arch === 'aarch64' || arch === 'arm64')
        return 'arm64';
    if (arch)
        return `other:${arch}`;
    return 'unknown';
};
const normalizePlatform = (platform) => {
    // Node platforms:
    // - https://nodejs.org/api/process.html#processplatform
    // Deno platforms:
    // - https://doc.deno.land/deno/stable/~/Deno.build
    // - https://github.com/denoland/deno/issues/14799
    platform = platform.toLowerCase();
    // NOTE: this iOS check is untested and may not work
    // Node does not work natively on IOS, there is a fork at
    // https://github.com/nodejs-mobile/nodejs-mobile
    // however it is unknown at the time of writing how to detect if it is running
    if (platform.includes('ios'))
        return 'iOS';
    if (platform === 'android')
        return 'Android';
    if (platform === 'darwin')
        return 'MacOS';
    if (platform === 'win32')
        return 'Windows';
    if (platform === 'freebsd')
        return 'FreeBSD';
    if (platform === 'openbsd')
        return 'OpenBSD';
    if (platform === 'linux')
        return 'Linux';
    if (platform)
        return `Other:${platform}`;
    return 'Unknown';
};
let _platformHeaders;
const getPlatformHeaders = () => {
    return (_platformHeaders ?? (_platformHeaders = getPlatformProperties()));
};
//# sourceMappingURL=detect-platform.mjs.map
;// CONCATENATED MODULE: ./node_modules/cloudflare/internal/shims.mjs
function getDefaultFetch() {
    if (typeof fetch !== 'undefined') {
        return fetch;
    }
    throw new Error('`fetch` is not defined as a global; Either pass `fetch` to the client, `new Cloudflare({ fetch })` or polyfill the global, `globalThis.fetch = fetch`');
}
function makeReadableStream(...args) {
    const ReadableStream = globalThis.ReadableStream;
    if (typeof ReadableStream === 'undefined') {
        // Note: All of the platforms / runtimes we officially support already define
        // `ReadableStream` as a global, so this should only ever be hit on unsupported runtimes.
        throw new Error('`ReadableStream` is not defined as a global; You will need to polyfill it, `globalThis.ReadableStream = ReadableStream`');
    }
    return new ReadableStream(...args);
}
function ReadableStreamFrom(iterable) {
    let iter = Symbol.asyncIterator in iterable ? iterable[Symbol.asyncIterator]() : iterable[Symbol.iterator]();
    return makeReadableStream({
        start() { },
        async pull(controller) {
            const { done, value } = await iter.next();
            if (done) {
                controller.close();
            }
            else {
                controller.enqueue(value);
            }
        },
        async cancel() {
            await iter.return?.();
        },
    });
}
/**
 * Most browsers don't yet have async iterable support for ReadableStream,
 * and Node has a very different way of reading bytes from its "ReadableStream".
 *
 * This polyfill was pulled from https://github.com/MattiasBuelens/web-streams-polyfill/pull/122#issuecomment-1627354490
 */
function ReadableStreamToAsyncIterable(stream) {
    if (stream[Symbol.asyncIterator])
        return stream;
    const reader = stream.getReader();
    return {
        async next() {
            try {
                const result = await reader.read();
                if (result?.done)
                    reader.releaseLock(); // release lock when stream becomes closed
                return result;
            }
            catch (e) {
                reader.releaseLock(); // release lock when stream becomes errored
                throw e;
            }
        },
        async return() {
            const cancelPromise = reader.cancel();
            reader.releaseLock();
            await cancelPromise;
            return { done: true, value: undefined };
        },
        [Symbol.asyncIterator]() {
            return this;
        },
    };
}
/**
 * Cancels a ReadableStream we don't need to consume.
 * See https://undici.nodejs.org/#/?id=garbage-collection
 */
async function CancelReadableStream(stream) {
    if (stream === null || typeof stream !== 'object')
        return;
    if (stream[Symbol.asyncIterator]) {
        await stream[Symbol.asyncIterator]().return?.();
        return;
    }
    const reader = stream.getReader();
    const cancelPromise = reader.cancel();
    reader.releaseLock();
    await cancelPromise;
}
//# sourceMappingURL=shims.mjs.map
;// CONCATENATED MODULE: ./node_modules/cloudflare/internal/request-options.mjs
const FallbackEncoder = ({ headers, body }) => {
    return {
        bodyHeaders: {
            'content-type': 'application/json',
        },
        body: JSON.stringify(body),
    };
};
//# sourceMappingURL=request-options.mjs.map
;// CONCATENATED MODULE: ./node_modules/cloudflare/internal/qs/formats.mjs
const default_format = 'RFC3986';
const default_formatter = (v) => String(v);
const formatters = {
    RFC1738: (v) => String(v).replace(/%20/g, '+'),
    RFC3986: default_formatter,
};
const RFC1738 = 'RFC1738';
const RFC3986 = 'RFC3986';
//# sourceMappingURL=formats.mjs.map
;// CONCATENATED MODULE: ./node_modules/cloudflare/internal/qs/utils.mjs


let has = (obj, key) => ((has = Object.hasOwn ?? Function.prototype.call.bind(Object.prototype.hasOwnProperty)),
    has(obj, key));
const hex_table = /* @__PURE__ */ (() => {
    const array = [];
    for (let i = 0; i < 256; ++i) {
        array.push('%' + ((i < 16 ? '0' : '') + i.toString(16)).toUpperCase());
    }
    return array;
})();
function compact_queue(queue) {
    while (queue.length > 1) {
        const item = queue.pop();
        if (!item)
            continue;
        const obj = item.obj[item.prop];
        if (isArray(obj)) {
            const compacted = [];
            for (let j = 0; j < obj.length; ++j) {
                if (typeof obj[j] !== 'undefined') {
                    compacted.push(obj[j]);
                }
            }
            // @ts-ignore
            item.obj[item.prop] = compacted;
        }
    }
}
function array_to_object(source, options) {
    const obj = options && options.plainObjects ? Object.create(null) : {};
    for (let i = 0; i < source.length; ++i) {
        if (typeof source[i] !== 'undefined') {
            obj[i] = source[i];
        }
    }
    return obj;
}
function merge(target, source, options = {}) {
    if (!source) {
        return target;
    }
    if (typeof source !== 'object') {
        if (isArray(target)) {
            target.push(source);
        }
        else if (target && typeof target === 'object') {
            if ((options && (options.plainObjects || options.allowPrototypes)) || !has(Object.prototype, source)) {
                target[source] = true;
            }
        }
        else {
            return [target, source];
        }
        return target;
    }
    if (!target || typeof target !== 'object') {
        return [target].concat(source);
    }
    let mergeTarget = target;
    if (isArray(target) && !isArray(source)) {
        // @ts-ignore
        mergeTarget = array_to_object(target, options);
    }
    if (isArray(target) && isArray(source)) {
        source.forEach(function (item, i) {
            if (has(target, i)) {
                const targetItem = target[i];
                if (targetItem && typeof targetItem === 'object' && item && typeof item === 'object') {
                    target[i] = merge(targetItem, item, options);
                }
                else {
                    target.push(item);
                }
            }
            else {
                target[i] = item;
            }
        });
        return target;
    }
    return Object.keys(source).reduce(function (acc, key) {
        const value = source[key];
        if (has(acc, key)) {
            acc[key] = merge(acc[key], value, options);
        }
        else {
            acc[key] = value;
        }
        return acc;
    }, mergeTarget);
}
function assign_single_source(target, source) {
    return Object.keys(source).reduce(function (acc, key) {
        acc[key] = source[key];
        return acc;
    }, target);
}
function decode(str, _, charset) {
    const strWithoutPlus = str.replace(/\+/g, ' ');
    if (charset === 'iso-8859-1') {
        // unescape never throws, no try...catch needed:
        return strWithoutPlus.replace(/%[0-9a-f]{2}/gi, unescape);
    }
    // utf-8
    try {
        return decodeURIComponent(strWithoutPlus);
    }
    catch (e) {
        return strWithoutPlus;
    }
}
const limit = 1024;
const encode = (str, _defaultEncoder, charset, _kind, format) => {
    // This code was originally written by Brian White for the io.js core querystring library.
    // It has been adapted here for stricter adherence to RFC 3986
    if (str.length === 0) {
        return str;
    }
    let string = str;
    if (typeof str === 'symbol') {
        string = Symbol.prototype.toString.call(str);
    }
    else if (typeof str !== 'string') {
        string = String(str);
    }
    if (charset === 'iso-8859-1') {
        return escape(string).replace(/%u[0-9a-f]{4}/gi, function ($0) {
            return '%26%23' + parseInt($0.slice(2), 16) + '%3B';
        });
    }
    let out = '';
    for (let j = 0; j < string.length; j += limit) {
        const segment = string.length >= limit ? string.slice(j, j + limit) : string;
        const arr = [];
        for (let i = 0; i < segment.length; ++i) {
            let c = segment.charCodeAt(i);
            if (c === 0x2d || // -
                c === 0x2e || // .
                c === 0x5f || // _
                c === 0x7e || // ~
                (c >= 0x30 && c <= 0x39) || // 0-9
                (c >= 0x41 && c <= 0x5a) || // a-z
                (c >= 0x61 && c <= 0x7a) || // A-Z
                (format === RFC1738 && (c === 0x28 || c === 0x29)) // ( )
            ) {
                arr[arr.length] = segment.charAt(i);
                continue;
            }
            if (c < 0x80) {
                arr[arr.length] = hex_table[c];
                continue;
            }
            if (c < 0x800) {
                arr[arr.length] = hex_table[0xc0 | (c >> 6)] + hex_table[0x80 | (c & 0x3f)];
                continue;
            }
            if (c < 0xd800 || c >= 0xe000) {
                arr[arr.length] =
                    hex_table[0xe0 | (c >> 12)] + hex_table[0x80 | ((c >> 6) & 0x3f)] + hex_table[0x80 | (c & 0x3f)];
                continue;
            }
            i += 1;
            c = 0x10000 + (((c & 0x3ff) << 10) | (segment.charCodeAt(i) & 0x3ff));
            arr[arr.length] =
                hex_table[0xf0 | (c >> 18)] +
                    hex_table[0x80 | ((c >> 12) & 0x3f)] +
                    hex_table[0x80 | ((c >> 6) & 0x3f)] +
                    hex_table[0x80 | (c & 0x3f)];
        }
        out += arr.join('');
    }
    return out;
};
function compact(value) {
    const queue = [{ obj: { o: value }, prop: 'o' }];
    const refs = [];
    for (let i = 0; i < queue.length; ++i) {
        const item = queue[i];
        // @ts-ignore
        const obj = item.obj[item.prop];
        const keys = Object.keys(obj);
        for (let j = 0; j < keys.length; ++j) {
            const key = keys[j];
            const val = obj[key];
            if (typeof val === 'object' && val !== null && refs.indexOf(val) === -1) {
                queue.push({ obj: obj, prop: key });
                refs.push(val);
            }
        }
    }
    compact_queue(queue);
    return value;
}
function is_regexp(obj) {
    return Object.prototype.toString.call(obj) === '[object RegExp]';
}
function is_buffer(obj) {
    if (!obj || typeof obj !== 'object') {
        return false;
    }
    return !!(obj.constructor && obj.constructor.isBuffer && obj.constructor.isBuffer(obj));
}
function combine(a, b) {
    return [].concat(a, b);
}
function maybe_map(val, fn) {
    if ((0,utils_values/* isArray */.cy)(val)) {
        const mapped = [];
        for (let i = 0; i < val.length; i += 1) {
            mapped.push(fn(val[i]));
        }
        return mapped;
    }
    return fn(val);
}
//# sourceMappingURL=utils.mjs.map
;// CONCATENATED MODULE: ./node_modules/cloudflare/internal/qs/stringify.mjs



const array_prefix_generators = {
    brackets(prefix) {
        return String(prefix) + '[]';
    },
    comma: 'comma',
    indices(prefix, key) {
        return String(prefix) + '[' + key + ']';
    },
    repeat(prefix) {
        return String(prefix);
    },
};
const push_to_array = function (arr, value_or_array) {
    Array.prototype.push.apply(arr, (0,utils_values/* isArray */.cy)(value_or_array) ? value_or_array : [value_or_array]);
};
let toISOString;
const defaults = {
    addQueryPrefix: false,
    allowDots: false,
    allowEmptyArrays: false,
    arrayFormat: 'indices',
    charset: 'utf-8',
    charsetSentinel: false,
    delimiter: '&',
    encode: true,
    encodeDotInKeys: false,
    encoder: encode,
    encodeValuesOnly: false,
    format: default_format,
    formatter: default_formatter,
    /** @deprecated */
    indices: false,
    serializeDate(date) {
        return (toISOString ?? (toISOString = Function.prototype.call.bind(Date.prototype.toISOString)))(date);
    },
    skipNulls: false,
    strictNullHandling: false,
};
function is_non_nullish_primitive(v) {
    return (typeof v === 'string' ||
        typeof v === 'number' ||
        typeof v === 'boolean' ||
        typeof v === 'symbol' ||
        typeof v === 'bigint');
}
const sentinel = {};
function inner_stringify(object, prefix, generateArrayPrefix, commaRoundTrip, allowEmptyArrays, strictNullHandling, skipNulls, encodeDotInKeys, encoder, filter, sort, allowDots, serializeDate, format, formatter, encodeValuesOnly, charset, sideChannel) {
    let obj = object;
    let tmp_sc = sideChannel;
    let step = 0;
    let find_flag = false;
    while ((tmp_sc = tmp_sc.get(sentinel)) !== void undefined && !find_flag) {
        // Where object last appeared in the ref tree
        const pos = tmp_sc.get(object);
        step += 1;
        if (typeof pos !== 'undefined') {
            if (pos === step) {
                throw new RangeError('Cyclic object value');
            }
            else {
                find_flag = true; // Break while
            }
        }
        if (typeof tmp_sc.get(sentinel) === 'undefined') {
            step = 0;
        }
    }
    if (typeof filter === 'function') {
        obj = filter(prefix, obj);
    }
    else if (obj instanceof Date) {
        obj = serializeDate?.(obj);
    }
    else if (generateArrayPrefix === 'comma' && (0,utils_values/* isArray */.cy)(obj)) {
        obj = maybe_map(obj, function (value) {
            if (value instanceof Date) {
                return serializeDate?.(value);
            }
            return value;
        });
    }
    if (obj === null) {
        if (strictNullHandling) {
            return encoder && !encodeValuesOnly ?
                // @ts-expect-error
                encoder(prefix, defaults.encoder, charset, 'key', format)
                : prefix;
        }
        obj = '';
    }
    if (is_non_nullish_primitive(obj) || is_buffer(obj)) {
        if (encoder) {
            const key_value = encodeValuesOnly ? prefix
                // @ts-expect-error
                : encoder(prefix, defaults.encoder, charset, 'key', format);
            return [
                formatter?.(key_value) +
                    '=' +
                    // @ts-expect-error
                    formatter?.(encoder(obj, defaults.encoder, charset, 'value', format)),
            ];
        }
        return [formatter?.(prefix) + '=' + formatter?.(String(obj))];
    }
    const values = [];
    if (typeof obj === 'undefined') {
        return values;
    }
    let obj_keys;
    if (generateArrayPrefix === 'comma' && (0,utils_values/* isArray */.cy)(obj)) {
        // we need to join elements in
        if (encodeValuesOnly && encoder) {
            // @ts-expect-error values only
            obj = maybe_map(obj, encoder);
        }
        obj_keys = [{ value: obj.length > 0 ? obj.join(',') || null : void undefined }];
    }
    else if ((0,utils_values/* isArray */.cy)(filter)) {
        obj_keys = filter;
    }
    else {
        const keys = Object.keys(obj);
        obj_keys = sort ? keys.sort(sort) : keys;
    }
    const encoded_prefix = encodeDotInKeys ? String(prefix).replace(/\./g, '%2E') : String(prefix);
    const adjusted_prefix = commaRoundTrip && (0,utils_values/* isArray */.cy)(obj) && obj.length === 1 ? encoded_prefix + '[]' : encoded_prefix;
    if (allowEmptyArrays && (0,utils_values/* isArray */.cy)(obj) && obj.length === 0) {
        return adjusted_prefix + '[]';
    }
    for (let j = 0; j < obj_keys.length; ++j) {
        const key = obj_keys[j];
        const value = 
        // @ts-ignore
        typeof key === 'object' && typeof key.value !== 'undefined' ? key.value : obj[key];
        if (skipNulls && value === null) {
            continue;
        }
        // @ts-ignore
        const encoded_key = allowDots && encodeDotInKeys ? key.replace(/\./g, '%2E') : key;
        const key_prefix = (0,utils_values/* isArray */.cy)(obj) ?
            typeof generateArrayPrefix === 'function' ?
                generateArrayPrefix(adjusted_prefix, encoded_key)
                : adjusted_prefix
            : adjusted_prefix + (allowDots ? '.' + encoded_key : '[' + encoded_key + ']');
        sideChannel.set(object, step);
        const valueSideChannel = new WeakMap();
        valueSideChannel.set(sentinel, sideChannel);
        push_to_array(values, inner_stringify(value, key_prefix, generateArrayPrefix, commaRoundTrip, allowEmptyArrays, strictNullHandling, skipNulls, encodeDotInKeys, 
        // @ts-ignore
        generateArrayPrefix === 'comma' && encodeValuesOnly && (0,utils_values/* isArray */.cy)(obj) ? null : encoder, filter, sort, allowDots, serializeDate, format, formatter, encodeValuesOnly, charset, valueSideChannel));
    }
    return values;
}
function normalize_stringify_options(opts = defaults) {
    if (typeof opts.allowEmptyArrays !== 'undefined' && typeof opts.allowEmptyArrays !== 'boolean') {
        throw new TypeError('`allowEmptyArrays` option can only be `true` or `false`, when provided');
    }
    if (typeof opts.encodeDotInKeys !== 'undefined' && typeof opts.encodeDotInKeys !== 'boolean') {
        throw new TypeError('`encodeDotInKeys` option can only be `true` or `false`, when provided');
    }
    if (opts.encoder !== null && typeof opts.encoder !== 'undefined' && typeof opts.encoder !== 'function') {
        throw new TypeError('Encoder has to be a function.');
    }
    const charset = opts.charset || defaults.charset;
    if (typeof opts.charset !== 'undefined' && opts.charset !== 'utf-8' && opts.charset !== 'iso-8859-1') {
        throw new TypeError('The charset option must be either utf-8, iso-8859-1, or undefined');
    }
    let format = default_format;
    if (typeof opts.format !== 'undefined') {
        if (!has(formatters, opts.format)) {
            throw new TypeError('Unknown format option provided.');
        }
        format = opts.format;
    }
    const formatter = formatters[format];
    let filter = defaults.filter;
    if (typeof opts.filter === 'function' || (0,utils_values/* isArray */.cy)(opts.filter)) {
        filter = opts.filter;
    }
    let arrayFormat;
    if (opts.arrayFormat && opts.arrayFormat in array_prefix_generators) {
        arrayFormat = opts.arrayFormat;
    }
    else if ('indices' in opts) {
        arrayFormat = opts.indices ? 'indices' : 'repeat';
    }
    else {
        arrayFormat = defaults.arrayFormat;
    }
    if ('commaRoundTrip' in opts && typeof opts.commaRoundTrip !== 'boolean') {
        throw new TypeError('`commaRoundTrip` must be a boolean, or absent');
    }
    const allowDots = typeof opts.allowDots === 'undefined' ?
        !!opts.encodeDotInKeys === true ?
            true
            : defaults.allowDots
        : !!opts.allowDots;
    return {
        addQueryPrefix: typeof opts.addQueryPrefix === 'boolean' ? opts.addQueryPrefix : defaults.addQueryPrefix,
        // @ts-ignore
        allowDots: allowDots,
        allowEmptyArrays: typeof opts.allowEmptyArrays === 'boolean' ? !!opts.allowEmptyArrays : defaults.allowEmptyArrays,
        arrayFormat: arrayFormat,
        charset: charset,
        charsetSentinel: typeof opts.charsetSentinel === 'boolean' ? opts.charsetSentinel : defaults.charsetSentinel,
        commaRoundTrip: !!opts.commaRoundTrip,
        delimiter: typeof opts.delimiter === 'undefined' ? defaults.delimiter : opts.delimiter,
        encode: typeof opts.encode === 'boolean' ? opts.encode : defaults.encode,
        encodeDotInKeys: typeof opts.encodeDotInKeys === 'boolean' ? opts.encodeDotInKeys : defaults.encodeDotInKeys,
        encoder: typeof opts.encoder === 'function' ? opts.encoder : defaults.encoder,
        encodeValuesOnly: typeof opts.encodeValuesOnly === 'boolean' ? opts.encodeValuesOnly : defaults.encodeValuesOnly,
        filter: filter,
        format: format,
        formatter: formatter,
        serializeDate: typeof opts.serializeDate === 'function' ? opts.serializeDate : defaults.serializeDate,
        skipNulls: typeof opts.skipNulls === 'boolean' ? opts.skipNulls : defaults.skipNulls,
        // @ts-ignore
        sort: typeof opts.sort === 'function' ? opts.sort : null,
        strictNullHandling: typeof opts.strictNullHandling === 'boolean' ? opts.strictNullHandling : defaults.strictNullHandling,
    };
}
function stringify(object, opts = {}) {
    let obj = object;
    const options = normalize_stringify_options(opts);
    let obj_keys;
    let filter;
    if (typeof options.filter === 'function') {
        filter = options.filter;
        obj = filter('', obj);
    }
    else if ((0,utils_values/* isArray */.cy)(options.filter)) {
        filter = options.filter;
        obj_keys = filter;
    }
    const keys = [];
    if (typeof obj !== 'object' || obj === null) {
        return '';
    }
    const generateArrayPrefix = array_prefix_generators[options.arrayFormat];
    const commaRoundTrip = generateArrayPrefix === 'comma' && options.commaRoundTrip;
    if (!obj_keys) {
        obj_keys = Object.keys(obj);
    }
    if (options.sort) {
        obj_keys.sort(options.sort);
    }
    const sideChannel = new WeakMap();
    for (let i = 0; i < obj_keys.length; ++i) {
        const key = obj_keys[i];
        if (options.skipNulls && obj[key] === null) {
            continue;
        }
        push_to_array(keys, inner_stringify(obj[key], key, 
        // @ts-expect-error
        generateArrayPrefix, commaRoundTrip, options.allowEmptyArrays, options.strictNullHandling, options.skipNulls, options.encodeDotInKeys, options.encode ? options.encoder : null, options.filter, options.sort, options.allowDots, options.serializeDate, options.format, options.formatter, options.encodeValuesOnly, options.charset, sideChannel));
    }
    const joined = keys.join(options.delimiter);
    let prefix = options.addQueryPrefix === true ? '?' : '';
    if (options.charsetSentinel) {
        if (options.charset === 'iso-8859-1') {
            // encodeURIComponent('&#10003;'), the "numeric entity" representation of a checkmark
            prefix += 'utf8=%26%2310003%3B&';
        }
        else {
            // encodeURIComponent('\u2713')
            prefix += 'utf8=%E2%9C%93&';
        }
    }
    return joined.length > 0 ? prefix + joined : '';
}
//# sourceMappingURL=stringify.mjs.map
;// CONCATENATED MODULE: ./node_modules/cloudflare/internal/utils/query.mjs
// File generated from our OpenAPI spec by Stainless. See CONTRIBUTING.md for details.

function stringifyQuery(query) {
    return stringify(query, { allowDots: true, arrayFormat: 'repeat' });
}
//# sourceMappingURL=query.mjs.map
// EXTERNAL MODULE: ./node_modules/cloudflare/core/error.mjs
var core_error = __webpack_require__(831);
// EXTERNAL MODULE: ./node_modules/cloudflare/core/pagination.mjs
var pagination = __webpack_require__(8483);
// EXTERNAL MODULE: ./node_modules/cloudflare/core/api-promise.mjs
var api_promise = __webpack_require__(7897);
;// CONCATENATED MODULE: ./node_modules/cloudflare/internal/headers.mjs
// File generated from our OpenAPI spec by Stainless. See CONTRIBUTING.md for details.

const brand_privateNullableHeaders = /* @__PURE__ */ Symbol('brand.privateNullableHeaders');
function* iterateHeaders(headers) {
    if (!headers)
        return;
    if (brand_privateNullableHeaders in headers) {
        const { values, nulls } = headers;
        yield* values.entries();
        for (const name of nulls) {
            yield [name, null];
        }
        return;
    }
    let shouldClear = false;
    let iter;
    if (headers instanceof Headers) {
        iter = headers.entries();
    }
    else if ((0,utils_values/* isReadonlyArray */.MH)(headers)) {
        iter = headers;
    }
    else {
        shouldClear = true;
        iter = Object.entries(headers ?? {});
    }
    for (let row of iter) {
        const name = row[0];
        if (typeof name !== 'string')
            throw new TypeError('expected header name to be a string');
        const values = (0,utils_values/* isReadonlyArray */.MH)(row[1]) ? row[1] : [row[1]];
        let didClear = false;
        for (const value of values) {
            if (value === undefined)
                continue;
            // Objects keys always overwrite older headers, they never append.
            // Yield a null to clear the header before adding the new values.
            if (shouldClear && !didClear) {
                didClear = true;
                yield [name, null];
            }
            yield [name, value];
        }
    }
}
const buildHeaders = (newHeaders) => {
    const targetHeaders = new Headers();
    const nullHeaders = new Set();
    for (const headers of newHeaders) {
        const seenHeaders = new Set();
        for (const [name, value] of iterateHeaders(headers)) {
            const lowerName = name.toLowerCase();
            if (!seenHeaders.has(lowerName)) {
                targetHeaders.delete(name);
                seenHeaders.add(lowerName);
            }
            if (value === null) {
                targetHeaders.delete(name);
                nullHeaders.add(lowerName);
            }
            else {
                targetHeaders.append(name, value);
                nullHeaders.delete(lowerName);
            }
        }
    }
    return { [brand_privateNullableHeaders]: true, values: targetHeaders, nulls: nullHeaders };
};
const isEmptyHeaders = (headers) => {
    for (const _ of iterateHeaders(headers))
        return false;
    return true;
};
//# sourceMappingURL=headers.mjs.map
;// CONCATENATED MODULE: ./node_modules/cloudflare/internal/utils/env.mjs
// File generated from our OpenAPI spec by Stainless. See CONTRIBUTING.md for details.
/**
 * Read an environment variable.
 *
 * Trims beginning and trailing whitespace.
 *
 * Will return undefined if the environment variable doesn't exist or cannot be accessed.
 */
const readEnv = (env) => {
    if (typeof globalThis.process !== 'undefined') {
        return globalThis.process.env?.[env]?.trim() || undefined;
    }
    if (typeof globalThis.Deno !== 'undefined') {
        return globalThis.Deno.env?.get?.(env)?.trim() || undefined;
    }
    return undefined;
};
//# sourceMappingURL=env.mjs.map
// EXTERNAL MODULE: ./node_modules/cloudflare/internal/utils/log.mjs
var log = __webpack_require__(7679);
;// CONCATENATED MODULE: ./node_modules/cloudflare/client.mjs
var _BaseCloudflare_instances, _BaseCloudflare_encoder, _BaseCloudflare_baseURLOverridden, _a;
















































































































































/**
 * Base class for Cloudflare API clients.
 */
var BaseCloudflare = /* @__PURE__ */ (() => {
    /**
     * Base class for Cloudflare API clients.
     */
    class BaseCloudflare {
        /**
         * API Client for interfacing with the Cloudflare API.
         *
         * @param {string | null | undefined} [opts.apiToken=process.env['CLOUDFLARE_API_TOKEN'] ?? null]
         * @param {string | null | undefined} [opts.apiKey=process.env['CLOUDFLARE_API_KEY'] ?? null]
         * @param {string | null | undefined} [opts.apiEmail=process.env['CLOUDFLARE_EMAIL'] ?? null]
         * @param {string | null | undefined} [opts.userServiceKey=process.env['CLOUDFLARE_API_USER_SERVICE_KEY'] ?? null]
         * @param {string} [opts.baseURL=process.env['CLOUDFLARE_BASE_URL'] ?? https://api.cloudflare.com/client/v4] - Override the default base URL for the API.
         * @param {number} [opts.timeout=1 minute] - The maximum amount of time (in milliseconds) the client will wait for a response before timing out.
         * @param {MergedRequestInit} [opts.fetchOptions] - Additional `RequestInit` options to be passed to `fetch` calls.
         * @param {Fetch} [opts.fetch] - Specify a custom `fetch` function implementation.
         * @param {number} [opts.maxRetries=2] - The maximum number of times the client will retry a request.
         * @param {HeadersLike} opts.defaultHeaders - Default headers to include with every request to the API.
         * @param {Record<string, string | undefined>} opts.defaultQuery - Default query parameters to include with every request to the API.
         * @param {string | null} [opts.apiVersion] - Define the version to target for the API.
         */
        constructor({ baseURL = readEnv('CLOUDFLARE_BASE_URL'), apiVersion = null, apiToken = readEnv('CLOUDFLARE_API_TOKEN') ?? null, apiKey = readEnv('CLOUDFLARE_API_KEY') ?? null, apiEmail = readEnv('CLOUDFLARE_EMAIL') ?? null, userServiceKey = readEnv('CLOUDFLARE_API_USER_SERVICE_KEY') ?? null, ...opts } = {}) {
            _BaseCloudflare_instances.add(this);
            _BaseCloudflare_encoder.set(this, void 0);
            const options = {
                apiToken,
                apiKey,
                apiEmail,
                userServiceKey,
                ...opts,
                baseURL: baseURL || `https://api.cloudflare.com/client/v4`,
                apiVersion: apiVersion || new Date().toISOString().slice(0, 10),
            };
            this.baseURL = options.baseURL;
            this.timeout = options.timeout ?? BaseCloudflare.DEFAULT_TIMEOUT /* 1 minute */;
            this.logger = options.logger ?? console;
            const defaultLogLevel = 'warn';
            // Set default logLevel early so that we can log a warning in parseLogLevel.
            this.logLevel = defaultLogLevel;
            this.logLevel =
                (0,log/* parseLogLevel */.ML)(options.logLevel, 'ClientOptions.logLevel', this) ??
                    (0,log/* parseLogLevel */.ML)(readEnv('CLOUDFLARE_LOG'), "process.env['CLOUDFLARE_LOG']", this) ??
                    defaultLogLevel;
            this.fetchOptions = options.fetchOptions;
            this.maxRetries = options.maxRetries ?? 2;
            this.fetch = options.fetch ?? getDefaultFetch();
            (0,tslib/* __classPrivateFieldSet */.G)(this, _BaseCloudflare_encoder, FallbackEncoder, "f");
            const customHeadersEnv = readEnv('CLOUDFLARE_CUSTOM_HEADERS');
            if (customHeadersEnv) {
                const parsed = {};
                for (const line of customHeadersEnv.split('\n')) {
                    const colon = line.indexOf(':');
                    if (colon >= 0) {
                        parsed[line.substring(0, colon).trim()] = line.substring(colon + 1).trim();
                    }
                }
                options.defaultHeaders = { ...parsed, ...options.defaultHeaders };
            }
            this._options = options;
            this.apiToken = apiToken;
            this.apiKey = apiKey;
            this.apiEmail = apiEmail;
            this.userServiceKey = userServiceKey;
            this.apiVersion = options.apiVersion;
        }
        /**
         * Create a new client instance re-using the same options given to the current client with optional overriding.
         */
        withOptions(options) {
            const client = new this.constructor({
                ...this._options,
                baseURL: this.baseURL,
                maxRetries: this.maxRetries,
                timeout: this.timeout,
                logger: this.logger,
                logLevel: this.logLevel,
                fetch: this.fetch,
                fetchOptions: this.fetchOptions,
                apiToken: this.apiToken,
                apiKey: this.apiKey,
                apiEmail: this.apiEmail,
                userServiceKey: this.userServiceKey,
                apiVersion: this.apiVersion,
                ...options,
            });
            return client;
        }
        defaultQuery() {
            return this._options.defaultQuery;
        }
        validateHeaders({ values, nulls }) {
            if (this.apiEmail && values.get('x-auth-email')) {
                return;
            }
            if (nulls.has('x-auth-email')) {
                return;
            }
            if (this.apiKey && values.get('x-auth-key')) {
                return;
            }
            if (nulls.has('x-auth-key')) {
                return;
            }
            if (this.apiToken && values.get('authorization')) {
                return;
            }
            if (nulls.has('authorization')) {
                return;
            }
            if (this.userServiceKey && values.get('x-auth-user-service-key')) {
                return;
            }
            if (nulls.has('x-auth-user-service-key')) {
                return;
            }
            throw new Error('Could not resolve authentication method. Expected one of apiEmail, apiKey, apiToken or userServiceKey to be set. Or for one of the "X-Auth-Email", "X-Auth-Key", "Authorization" or "X-Auth-User-Service-Key" headers to be explicitly omitted');
        }
        async authHeaders(opts) {
            return buildHeaders([
                await this.apiEmailAuth(opts),
                await this.apiKeyAuth(opts),
                await this.apiTokenAuth(opts),
                await this.userServiceKeyAuth(opts),
            ]);
        }
        async apiEmailAuth(opts) {
            if (this.apiEmail == null) {
                return undefined;
            }
            return buildHeaders([{ 'X-Auth-Email': this.apiEmail }]);
        }
        async apiKeyAuth(opts) {
            if (this.apiKey == null) {
                return undefined;
            }
            return buildHeaders([{ 'X-Auth-Key': this.apiKey }]);
        }
        async apiTokenAuth(opts) {
            if (this.apiToken == null) {
                return undefined;
            }
            return buildHeaders([{ Authorization: `Bearer ${this.apiToken}` }]);
        }
        async userServiceKeyAuth(opts) {
            if (this.userServiceKey == null) {
                return undefined;
            }
            return buildHeaders([{ 'X-Auth-User-Service-Key': this.userServiceKey }]);
        }
        stringifyQuery(query) {
            return stringifyQuery(query);
        }
        getUserAgent() {
            return `${this.constructor.name}/JS ${VERSION}`;
        }
        defaultIdempotencyKey() {
            return `stainless-node-retry-${uuid4()}`;
        }
        makeStatusError(status, error, message, headers) {
            return core_error/* APIError */.LG.generate(status, error, message, headers);
        }
        buildURL(path, query, defaultBaseURL) {
            const baseURL = (!(0,tslib/* __classPrivateFieldGet */.g)(this, _BaseCloudflare_instances, "m", _BaseCloudflare_baseURLOverridden).call(this) && defaultBaseURL) || this.baseURL;
            const url = (0,utils_values/* isAbsoluteURL */.nt)(path) ?
                new URL(path)
                : new URL(baseURL + (baseURL.endsWith('/') && path.startsWith('/') ? path.slice(1) : path));
            const defaultQuery = this.defaultQuery();
            const pathQuery = Object.fromEntries(url.searchParams);
            if (!(0,utils_values/* isEmptyObj */.ze)(defaultQuery) || !(0,utils_values/* isEmptyObj */.ze)(pathQuery)) {
                query = { ...pathQuery, ...defaultQuery, ...query };
            }
            if (typeof query === 'object' && query && !Array.isArray(query)) {
                url.search = this.stringifyQuery(query);
            }
            return url.toString();
        }
        /**
         * Used as a callback for mutating the given `FinalRequestOptions` object.
         */
        async prepareOptions(options) { }
        /**
         * Used as a callback for mutating the given `RequestInit` object.
         *
         * This is useful for cases where you want to add certain headers based off of
         * the request properties, e.g. `method` or `url`.
         */
        async prepareRequest(request, { url, options }) { }
        get(path, opts) {
            return this.methodRequest('get', path, opts);
        }
        post(path, opts) {
            return this.methodRequest('post', path, opts);
        }
        patch(path, opts) {
            return this.methodRequest('patch', path, opts);
        }
        put(path, opts) {
            return this.methodRequest('put', path, opts);
        }
        delete(path, opts) {
            return this.methodRequest('delete', path, opts);
        }
        methodRequest(method, path, opts) {
            return this.request(Promise.resolve(opts).then((opts) => {
                return { method, path, ...opts };
            }));
        }
        request(options, remainingRetries = null) {
            return new api_promise/* APIPromise */.C(this, this.makeRequest(options, remainingRetries, undefined));
        }
        async makeRequest(optionsInput, retriesRemaining, retryOfRequestLogID) {
            const options = await optionsInput;
            const maxRetries = options.maxRetries ?? this.maxRetries;
            if (retriesRemaining == null) {
                retriesRemaining = maxRetries;
            }
            await this.prepareOptions(options);
            const { req, url, timeout } = await this.buildRequest(options, {
                retryCount: maxRetries - retriesRemaining,
            });
            await this.prepareRequest(req, { url, options });
            /** Not an API request ID, just for correlating local log entries. */
            const requestLogID = 'log_' + ((Math.random() * (1 << 24)) | 0).toString(16).padStart(6, '0');
            const retryLogStr = retryOfRequestLogID === undefined ? '' : `, retryOf: ${retryOfRequestLogID}`;
            const startTime = Date.now();
            (0,log/* loggerFor */.WG)(this).debug(`[${requestLogID}] sending request`, (0,log/* formatRequestDetails */.xL)({
                retryOfRequestLogID,
                method: options.method,
                url,
                options,
                headers: req.headers,
            }));
            if (options.signal?.aborted) {
                throw new core_error/* APIUserAbortError */.cH();
            }
            const controller = new AbortController();
            const response = await this.fetchWithTimeout(url, req, timeout, controller).catch(errors/* castToError */.r);
            const headersTime = Date.now();
            if (response instanceof globalThis.Error) {
                const retryMessage = `retrying, ${retriesRemaining} attempts remaining`;
                if (options.signal?.aborted) {
                    throw new core_error/* APIUserAbortError */.cH();
                }
                // detect native connection timeout errors
                // deno throws "TypeError: error sending request for url (https://example/): client error (Connect): tcp connect error: Operation timed out (os error 60): Operation timed out (os error 60)"
                // undici throws "TypeError: fetch failed" with cause "ConnectTimeoutError: Connect Timeout Error (attempted address: example:443, timeout: 1ms)"
                // others do not provide enough information to distinguish timeouts from other connection errors
                const isTimeout = (0,errors/* isAbortError */.z)(response) ||
                    /timed? ?out/i.test(String(response) + ('cause' in response ? String(response.cause) : ''));
                if (retriesRemaining) {
                    (0,log/* loggerFor */.WG)(this).info(`[${requestLogID}] connection ${isTimeout ? 'timed out' : 'failed'} - ${retryMessage}`);
                    (0,log/* loggerFor */.WG)(this).debug(`[${requestLogID}] connection ${isTimeout ? 'timed out' : 'failed'} (${retryMessage})`, (0,log/* formatRequestDetails */.xL)({
                        retryOfRequestLogID,
                        url,
                        durationMs: headersTime - startTime,
                        message: response.message,
                    }));
                    return this.retryRequest(options, retriesRemaining, retryOfRequestLogID ?? requestLogID);
                }
                (0,log/* loggerFor */.WG)(this).info(`[${requestLogID}] connection ${isTimeout ? 'timed out' : 'failed'} - error; no more retries left`);
                (0,log/* loggerFor */.WG)(this).debug(`[${requestLogID}] connection ${isTimeout ? 'timed out' : 'failed'} (error; no more retries left)`, (0,log/* formatRequestDetails */.xL)({
                    retryOfRequestLogID,
                    url,
                    durationMs: headersTime - startTime,
                    message: response.message,
                }));
                if (isTimeout) {
                    throw new core_error/* APIConnectionTimeoutError */.qA();
                }
                throw new core_error/* APIConnectionError */.xX({ cause: response });
            }
            const responseInfo = `[${requestLogID}${retryLogStr}] ${req.method} ${url} ${response.ok ? 'succeeded' : 'failed'} with status ${response.status} in ${headersTime - startTime}ms`;
            if (!response.ok) {
                const shouldRetry = await this.shouldRetry(response);
                if (retriesRemaining && shouldRetry) {
                    const retryMessage = `retrying, ${retriesRemaining} attempts remaining`;
                    // We don't need the body of this response.
                    await CancelReadableStream(response.body);
                    (0,log/* loggerFor */.WG)(this).info(`${responseInfo} - ${retryMessage}`);
                    (0,log/* loggerFor */.WG)(this).debug(`[${requestLogID}] response error (${retryMessage})`, (0,log/* formatRequestDetails */.xL)({
                        retryOfRequestLogID,
                        url: response.url,
                        status: response.status,
                        headers: response.headers,
                        durationMs: headersTime - startTime,
                    }));
                    return this.retryRequest(options, retriesRemaining, retryOfRequestLogID ?? requestLogID, response.headers);
                }
                const retryMessage = shouldRetry ? `error; no more retries left` : `error; not retryable`;
                (0,log/* loggerFor */.WG)(this).info(`${responseInfo} - ${retryMessage}`);
                const errText = await response.text().catch((err) => (0,errors/* castToError */.r)(err).message);
                const errJSON = (0,utils_values/* safeJSON */.ml)(errText);
                const errMessage = errJSON ? undefined : errText;
                (0,log/* loggerFor */.WG)(this).debug(`[${requestLogID}] response error (${retryMessage})`, (0,log/* formatRequestDetails */.xL)({
                    retryOfRequestLogID,
                    url: response.url,
                    status: response.status,
                    headers: response.headers,
                    message: errMessage,
                    durationMs: Date.now() - startTime,
                }));
                const err = this.makeStatusError(response.status, errJSON, errMessage, response.headers);
                throw err;
            }
            (0,log/* loggerFor */.WG)(this).info(responseInfo);
            (0,log/* loggerFor */.WG)(this).debug(`[${requestLogID}] response start`, (0,log/* formatRequestDetails */.xL)({
                retryOfRequestLogID,
                url: response.url,
                status: response.status,
                headers: response.headers,
                durationMs: headersTime - startTime,
            }));
            return { response, options, controller, requestLogID, retryOfRequestLogID, startTime };
        }
        getAPIList(path, Page, opts) {
            return this.requestAPIList(Page, opts && 'then' in opts ?
                opts.then((opts) => ({ method: 'get', path, ...opts }))
                : { method: 'get', path, ...opts });
        }
        requestAPIList(Page, options) {
            const request = this.makeRequest(options, null, undefined);
            return new pagination/* PagePromise */.nC(this, request, Page);
        }
        async fetchWithTimeout(url, init, ms, controller) {
            const { signal, method, ...options } = init || {};
            const abort = this._makeAbort(controller);
            if (signal)
                signal.addEventListener('abort', abort, { once: true });
            const timeout = setTimeout(abort, ms);
            const isReadableBody = (globalThis.ReadableStream && options.body instanceof globalThis.ReadableStream) ||
                (typeof options.body === 'object' && options.body !== null && Symbol.asyncIterator in options.body);
            const fetchOptions = {
                signal: controller.signal,
                ...(isReadableBody ? { duplex: 'half' } : {}),
                method: 'GET',
                ...options,
            };
            if (method) {
                // Custom methods like 'patch' need to be uppercased
                // See https://github.com/nodejs/undici/issues/2294
                fetchOptions.method = method.toUpperCase();
            }
            try {
                // use undefined this binding; fetch errors if bound to something else in browser/cloudflare
                return await this.fetch.call(undefined, url, fetchOptions);
            }
            finally {
                clearTimeout(timeout);
            }
        }
        async shouldRetry(response) {
            // Note this is not a standard header.
            const shouldRetryHeader = response.headers.get('x-should-retry');
            // If the server explicitly says whether or not to retry, obey.
            if (shouldRetryHeader === 'true')
                return true;
            if (shouldRetryHeader === 'false')
                return false;
            // Retry on request timeouts.
            if (response.status === 408)
                return true;
            // Retry on lock timeouts.
            if (response.status === 409)
                return true;
            // Retry on rate limits.
            if (response.status === 429)
                return true;
            // Retry internal errors.
            if (response.status >= 500)
                return true;
            return false;
        }
        async retryRequest(options, retriesRemaining, requestLogID, responseHeaders) {
            let timeoutMillis;
            // Note the `retry-after-ms` header may not be standard, but is a good idea and we'd like proactive support for it.
            const retryAfterMillisHeader = responseHeaders?.get('retry-after-ms');
            if (retryAfterMillisHeader) {
                const timeoutMs = parseFloat(retryAfterMillisHeader);
                if (!Number.isNaN(timeoutMs)) {
                    timeoutMillis = timeoutMs;
                }
            }
            // About the Retry-After header: https://developer.mozilla.org/en-US/docs/Web/HTTP/Headers/Retry-After
            const retryAfterHeader = responseHeaders?.get('retry-after');
            if (retryAfterHeader && !timeoutMillis) {
                const timeoutSeconds = parseFloat(retryAfterHeader);
                if (!Number.isNaN(timeoutSeconds)) {
                    timeoutMillis = timeoutSeconds * 1000;
                }
                else {
                    timeoutMillis = Date.parse(retryAfterHeader) - Date.now();
                }
            }
            // If the API asks us to wait a certain amount of time, just do what it
            // says, but otherwise calculate a default
            if (timeoutMillis === undefined) {
                const maxRetries = options.maxRetries ?? this.maxRetries;
                timeoutMillis = this.calculateDefaultRetryTimeoutMillis(retriesRemaining, maxRetries);
            }
            await sleep(timeoutMillis);
            return this.makeRequest(options, retriesRemaining - 1, requestLogID);
        }
        calculateDefaultRetryTimeoutMillis(retriesRemaining, maxRetries) {
            const initialRetryDelay = 0.5;
            const maxRetryDelay = 8.0;
            const numRetries = maxRetries - retriesRemaining;
            // Apply exponential backoff, but not more than the max.
            const sleepSeconds = Math.min(initialRetryDelay * Math.pow(2, numRetries), maxRetryDelay);
            // Apply some jitter, take up to at most 25 percent of the retry time.
            const jitter = 1 - Math.random() * 0.25;
            return sleepSeconds * jitter * 1000;
        }
        async buildRequest(inputOptions, { retryCount = 0 } = {}) {
            const options = { ...inputOptions };
            const { method, path, query, defaultBaseURL } = options;
            const url = this.buildURL(path, query, defaultBaseURL);
            if ('timeout' in options)
                (0,utils_values/* validatePositiveInteger */.wQ)('timeout', options.timeout);
            options.timeout = options.timeout ?? this.timeout;
            const { bodyHeaders, body } = this.buildBody({ options });
            const reqHeaders = await this.buildHeaders({ options: inputOptions, method, bodyHeaders, retryCount });
            const req = {
                method,
                headers: reqHeaders,
                ...(options.signal && { signal: options.signal }),
                ...(globalThis.ReadableStream &&
                    body instanceof globalThis.ReadableStream && { duplex: 'half' }),
                ...(body && { body }),
                ...(this.fetchOptions ?? {}),
                ...(options.fetchOptions ?? {}),
            };
            return { req, url, timeout: options.timeout };
        }
        async buildHeaders({ options, method, bodyHeaders, retryCount, }) {
            let idempotencyHeaders = {};
            if (this.idempotencyHeader && method !== 'get') {
                if (!options.idempotencyKey)
                    options.idempotencyKey = this.defaultIdempotencyKey();
                idempotencyHeaders[this.idempotencyHeader] = options.idempotencyKey;
            }
            const headers = buildHeaders([
                idempotencyHeaders,
                {
                    Accept: 'application/json',
                    'User-Agent': this.getUserAgent(),
                    'api-version': this.apiVersion,
                    'X-Stainless-Retry-Count': String(retryCount),
                    ...(options.timeout ? { 'X-Stainless-Timeout': String(Math.trunc(options.timeout / 1000)) } : {}),
                    ...getPlatformHeaders(),
                    'X-Auth-Key': this.apiKey,
                    'X-Auth-Email': this.apiEmail,
                },
                await this.authHeaders(options),
                this._options.defaultHeaders,
                bodyHeaders,
                options.headers,
            ]);
            this.validateHeaders(headers);
            return headers.values;
        }
        _makeAbort(controller) {
            // note: we can't just inline this method inside `fetchWithTimeout()` because then the closure
            //       would capture all request options, and cause a memory leak.
            return () => controller.abort();
        }
        buildBody({ options }) {
            const { body, headers: rawHeaders } = options;
            if (!body) {
                // A resource method always passes a `body` key when its operation defines a
                // request body, even if the caller omitted an optional body param. Keep the
                // content-type for those, and only elide it for operations with no body at
                // all (e.g. GET/DELETE).
                if (body == null && 'body' in options) {
                    return (0,tslib/* __classPrivateFieldGet */.g)(this, _BaseCloudflare_encoder, "f").call(this, { body, headers: buildHeaders([rawHeaders]) });
                }
                return { bodyHeaders: undefined, body: undefined };
            }
            const headers = buildHeaders([rawHeaders]);
            if (
            // Pass raw type verbatim
            ArrayBuffer.isView(body) ||
                body instanceof ArrayBuffer ||
                body instanceof DataView ||
                (typeof body === 'string' &&
                    // Preserve legacy string encoding behavior for now
                    headers.values.has('content-type')) ||
                // `Blob` is superset of `File`
                (globalThis.Blob && body instanceof globalThis.Blob) ||
                // `FormData` -> `multipart/form-data`
                body instanceof FormData ||
                // `URLSearchParams` -> `application/x-www-form-urlencoded`
                body instanceof URLSearchParams ||
                // Send chunked stream (each chunk has own `length`)
                (globalThis.ReadableStream && body instanceof globalThis.ReadableStream)) {
                return { bodyHeaders: undefined, body: body };
            }
            else if (typeof body === 'object' &&
                (Symbol.asyncIterator in body ||
                    (Symbol.iterator in body && 'next' in body && typeof body.next === 'function'))) {
                return { bodyHeaders: undefined, body: ReadableStreamFrom(body) };
            }
            else if (typeof body === 'object' &&
                headers.values.get('content-type') === 'application/x-www-form-urlencoded') {
                return {
                    bodyHeaders: { 'content-type': 'application/x-www-form-urlencoded' },
                    body: this.stringifyQuery(body),
                };
            }
            else {
                return (0,tslib/* __classPrivateFieldGet */.g)(this, _BaseCloudflare_encoder, "f").call(this, { body, headers });
            }
        }
    }
    _BaseCloudflare_encoder = new WeakMap(), _BaseCloudflare_instances = new WeakSet(), _BaseCloudflare_baseURLOverridden = function _BaseCloudflare_baseURLOverridden() {
        return this.baseURL !== 'https://api.cloudflare.com/client/v4';
    };
    BaseCloudflare.DEFAULT_TIMEOUT = 60000; // 1 minute
    return BaseCloudflare;
})();
/**
 * API Client for interfacing with the Cloudflare API.
 */
var Cloudflare = /* @__PURE__ */ (/* unused pure expression or super */ null && ((() => {
    /**
     * API Client for interfacing with the Cloudflare API.
     */
    class Cloudflare extends BaseCloudflare {
        constructor() {
            super(...arguments);
            this.accounts = new API.Accounts(this);
            this.organizations = new API.Organizations(this);
            this.tenants = new API.Tenants(this);
            this.originCACertificates = new API.OriginCACertificates(this);
            this.ips = new API.IPs(this);
            this.memberships = new API.Memberships(this);
            this.user = new API.User(this);
            this.zones = new API.Zones(this);
            this.loadBalancers = new API.LoadBalancers(this);
            this.cache = new API.Cache(this);
            this.ssl = new API.SSL(this);
            this.acm = new API.ACM(this);
            this.analyticsQuery = new API.AnalyticsQuery(this);
            this.argo = new API.Argo(this);
            this.certificateAuthorities = new API.CertificateAuthorities(this);
            this.clientCertificates = new API.ClientCertificates(this);
            this.customCertificates = new API.CustomCertificates(this);
            this.customCsrs = new API.CustomCsrs(this);
            this.customHostnames = new API.CustomHostnames(this);
            this.customNameservers = new API.CustomNameservers(this);
            this.tenantCustomNameservers = new API.TenantCustomNameservers(this);
            this.dnsFirewall = new API.DNSFirewall(this);
            this.dns = new API.DNS(this);
            this.emailSecurity = new API.EmailSecurity(this);
            this.emailAuth = new API.EmailAuth(this);
            this.emailRouting = new API.EmailRouting(this);
            this.emailSending = new API.EmailSending(this);
            this.filters = new API.Filters(this);
            this.firewall = new API.Firewall(this);
            this.healthchecks = new API.Healthchecks(this);
            this.keylessCertificates = new API.KeylessCertificates(this);
            this.logpush = new API.Logpush(this);
            this.logs = new API.Logs(this);
            this.originTLSClientAuth = new API.OriginTLSClientAuth(this);
            this.pageRules = new API.PageRules(this);
            this.rateLimits = new API.RateLimits(this);
            this.waitingRooms = new API.WaitingRooms(this);
            this.web3 = new API.Web3(this);
            this.workers = new API.Workers(this);
            this.kv = new API.KV(this);
            this.durableObjects = new API.DurableObjects(this);
            this.containers = new API.Containers(this);
            this.queues = new API.Queues(this);
            this.apiGateway = new API.APIGateway(this);
            this.managedTransforms = new API.ManagedTransforms(this);
            this.pageShield = new API.PageShield(this);
            this.rulesets = new API.Rulesets(this);
            this.urlNormalization = new API.URLNormalization(this);
            this.spectrum = new API.Spectrum(this);
            this.addressing = new API.Addressing(this);
            this.dls = new API.DLS(this);
            this.auditLogs = new API.AuditLogs(this);
            this.billing = new API.Billing(this);
            this.brandProtection = new API.BrandProtection(this);
            this.diagnostics = new API.Diagnostics(this);
            this.images = new API.Images(this);
            this.intel = new API.Intel(this);
            this.magicTransit = new API.MagicTransit(this);
            this.DDoSProtection = new API.DDoSProtection(this);
            this.magicNetworkMonitoring = new API.MagicNetworkMonitoring(this);
            this.magicCloudNetworking = new API.MagicCloudNetworking(this);
            this.networkInterconnects = new API.NetworkInterconnects(this);
            this.mtlsCertificates = new API.MTLSCertificates(this);
            this.pages = new API.Pages(this);
            /**
             * Registrar API for searching, checking, registering, and managing domains through Cloudflare Registrar.
             *
             * ## Prerequisites
             *
             * Before using this API, ensure:
             *
             * 1. **Cloudflare account** \u2014 the caller must have a valid Cloudflare account.
             * 2. **Billing profile** \u2014 the account must have a billing profile with a valid,
             *   current default payment method (credit card or other accepted method).
             *   This cannot be set up via API \u2014 the account owner must configure billing
             *   at `https://dash.cloudflare.com/{account_id}/billing/payment-info` before
             *   calling `POST /registrations`.
             * 3. **API authentication** \u2014 use an API token or API key with the appropriate
             *   Registrar permissions for the operations you are calling.
             *
             * ## Terminology: domain extension
             *
             * Throughout this API, "extension" refers to the domain extension part of a fully
             * qualified domain name \u2014 the portion after the registrable label. For example,
             * in `example.co.uk`, the extension is `co.uk` (not just `uk`). This covers both
             * top-level domains like `com` and multi-level extensions like `co.uk`. This is
             * distinct from other uses of the word "extension" (e.g., EPP extensions).
             *
             * ## Supported extensions
             *
             * This API supports programmatic registration for all extensions supported by
             * the dashboard experience, with the following exceptions:
             *
             * `giving`, `mom`, `inc`, `lol`, `sh`, `link`, `cc`, `new`
             *
             * Cloudflare Registrar supports 400+ extensions in the dashboard. Extensions
             * listed above can be registered at `https://dash.cloudflare.com/{account_id}/domains/registrations`.
             *
             * ## Typical workflow
             *
             * 1. **Search** \u2014 call `GET /domain-search?q={keyword}` to discover available domains.
             * 2. **Check** \u2014 call `POST /domain-check` with candidate domains to verify real-time
             *   availability and pricing.
             * 3. **Review the response** \u2014 if `registrable: false`, inspect `reason` to
             *   understand whether the domain is unavailable, the extension is not supported
             *   by this API, the extension is not supported by Cloudflare Registrar at all,
             *   or the extension's registry has frozen new registrations.
             * 4. **Handle premium domains** \u2014 if `tier: premium`, premium registration is
             *   not currently supported by this API. Surface the premium pricing to the user,
             *   but do not proceed to `POST /registrations` for that domain.
             * 5. **Observe the registration schema** \u2014 call `GET /extensions/:extension_name`
             *   to discover the required values for registering this extension.
             * 6. **Register** \u2014 call `POST /registrations` with the chosen domain name for
             *   supported non-premium registrations.
             * 7. **Confirm completion** \u2014 if the response is `201 Created`, registration
             *   completed within the default timeout and no polling is needed.
             * 8. **Poll when needed** \u2014 if the response is `202 Accepted`, poll
             *   `links.self` from the workflow response.
             * 9. **Stop for user action** \u2014 if `state: action_required`, stop polling and
             *   surface `context.action` to the user.
             *   The workflow will not resolve on its own.
             * 10. **Continue when blocked** \u2014 if `state: blocked`, continue polling and
             *   inform the user that a third party, such as the extension registry or losing
             *   registrar, is delaying progress.
             * 11. **Review failures before retrying** \u2014 if `state: failed`, review
             *   `error.code` and `error.message`, then decide whether user action or a new
             *   Check call is needed.
             *
             * **All successful domain registrations are non-refundable.** Once the registration
             * workflow completes with `state: succeeded`, the charge cannot be reversed.
             * Confirm pricing and domain choice with the user before calling `POST /registrations`.
             *
             * ## Default behavior for mutating operations
             *
             * By default, mutating operations such as create and update hold the connection
             * for a bounded, server-defined amount of time while the operation completes.
             * In most cases, the response contains a completed workflow status and no
             * polling is required.
             *
             * - **Completed within the synchronous wait window:** Returns `201` (create)
             * or `200` (update) with a `workflow_status` where `state: succeeded` and
             * `completed: true`.
             * - **Still processing after the synchronous wait window:** Returns
             * `202 Accepted` with a `workflow_status` where `completed: false`. Use
             * the `links.self` URL to poll for completion.
             *
             * ## Non-blocking mode
             *
             * To receive an immediate `202 Accepted` response without waiting, send the
             * `Prefer: respond-async` request header (RFC 7240). The server will acknowledge
             * it with a `Preference-Applied: respond-async` response header.
             *
             * ## Polling
             *
             * When the response is `202`, poll the workflow status endpoint indicated by
             * `links.self` in the response body until the workflow reaches a terminal
             * state or requires user action.
             */
            this.registrar = new API.Registrar(this);
            /**
             * Use the Registrar Sandbox API to test domain search, availability checks,
             * registration, and domain management flows without buying real domains.
             *
             * **This API is a test environment for the production Registrar API.**
             *
             * ## Prerequisites
             *
             * Before using this API, make sure you have:
             *
             * 1. **Cloudflare account** \u2014 the caller must have a valid Cloudflare account.
             * 2. **API authentication** \u2014 create an API token with Registrar Sandbox permissions.
             *
             * ## How the Sandbox API differs from the production Registrar API
             *
             * Because the Sandbox API is intended for testing, it behaves differently from
             * the production Registrar API in a few important ways:
             *
             * 1. **No billing** \u2014 you will not be charged real money for purchasing a domain.
             * 2. **No real domains** \u2014 purchased domains are test records and will not be
             *   reachable on the Internet.
             * 3. **No DNS zones** \u2014 purchasing a domain does not create a zone resource.
             * 4. **No Registration Express Mode** \u2014 you must provide full contact data.
             *
             * Sandbox purchases are still persisted. If you purchase a domain in the sandbox,
             * that domain will not be available for others to purchase in the sandbox.
             *
             * ## Terminology: domain extension
             *
             * Throughout this API, "extension" refers to the domain extension part of a fully
             * qualified domain name \u2014 the portion after the registrable label. For example,
             * in `example.co.uk`, the extension is `co.uk` (not just `uk`). This covers both
             * top-level domains like `com` and multi-level extensions like `co.uk`. This is
             * distinct from other uses of the word "extension" (e.g., EPP extensions).
             *
             * ## Supported extensions
             *
             * The Sandbox API currently supports programmatic registration for these
             * extensions:
             *
             * `com`, `net`
             *
             * The production Registrar API supports 40+ extensions.
             *
             * Cloudflare Registrar supports 400+ extensions in the dashboard. Extensions
             * not listed above can be registered at `https://dash.cloudflare.com/{account_id}/domains/registrations`.
             *
             * ## Typical workflow
             *
             * 1. **Search** \u2014 call `GET /domain-search?q={keyword}` to discover available domains.
             * 2. **Check** \u2014 call `POST /domain-check` with candidate domains to verify real-time
             *   availability and pricing.
             * 3. **Review the response** \u2014 if `registrable: false`, inspect `reason` to
             *   understand whether the domain is unavailable, the extension is not supported
             *   by this API, the extension is not supported by Cloudflare Registrar at all,
             *   or the extension's registry has frozen new registrations.
             * 4. **Handle premium domains** \u2014 if `tier: premium`, premium registration is
             *   not currently supported by this API. The Sandbox API currently supports
             *   only `com` and `net`, which do not have premium registrations, but clients
             *   should still handle this response for consistency with the production
             *   Registrar API. Surface the premium pricing to the user, but do not proceed
             *   to `POST /registrations` for that domain.
             * 5. **Observe the registration schema** \u2014 call `GET /extensions/:extension_name`
             *   to discover the required values for registering this extension.
             * 6. **Register** \u2014 call `POST /registrations` with the chosen domain name for
             *   supported non-premium registrations.
             * 7. **Confirm completion** \u2014 if the response is `201 Created`, registration
             *   completed within the default timeout and no polling is needed.
             * 8. **Poll when needed** \u2014 if the response is `202 Accepted`, poll
             *   `links.self` from the workflow response.
             * 9. **Stop for user action** \u2014 if `state: action_required`, stop polling and
             *   surface `context.action` to the user.
             *   The workflow will not resolve on its own.
             * 10. **Continue when blocked** \u2014 if `state: blocked`, continue polling and
             *   inform the user that a third party, such as the extension registry or losing
             *   registrar, is delaying progress.
             * 11. **Review failures before retrying** \u2014 if `state: failed`, review
             *   `error.code` and `error.message`, then decide whether user action or a new
             *   Check call is needed.
             *
             * ## Default behavior for mutating operations
             *
             * By default, mutating operations such as create and update hold the connection
             * for a bounded, server-defined amount of time while the operation completes.
             * In most cases, the response contains a completed workflow status and no
             * polling is required.
             *
             * - **Completed within the synchronous wait window:** Returns `201` (create)
             * or `200` (update) with a `workflow_status` where `state: succeeded` and
             * `completed: true`.
             * - **Still processing after the synchronous wait window:** Returns
             * `202 Accepted` with a `workflow_status` where `completed: false`. Use
             * the `links.self` URL to poll for completion.
             *
             * ## Non-blocking mode
             *
             * To receive an immediate `202 Accepted` response without waiting, send the
             * `Prefer: respond-async` request header (RFC 7240). The server will acknowledge
             * it with a `Preference-Applied: respond-async` response header.
             *
             * ## Polling
             *
             * When the response is `202`, poll the workflow status endpoint indicated by
             * `links.self` in the response body until the workflow reaches a terminal
             * state or requires user action.
             */
            this.registrarSandbox = new API.RegistrarSandbox(this);
            this.requestTracers = new API.RequestTracers(this);
            this.rules = new API.Rules(this);
            this.stream = new API.Stream(this);
            this.alerting = new API.Alerting(this);
            this.d1 = new API.D1Resource(this);
            this.r2 = new API.R2(this);
            this.r2DataCatalog = new API.R2DataCatalog(this);
            this.basinCatalog = new API.BasinCatalog(this);
            this.workersForPlatforms = new API.WorkersForPlatforms(this);
            this.zeroTrust = new API.ZeroTrust(this);
            this.turnstile = new API.Turnstile(this);
            this.connectivity = new API.Connectivity(this);
            this.hyperdrive = new API.HyperdriveResource(this);
            this.rum = new API.RUM(this);
            this.vectorize = new API.Vectorize(this);
            this.urlScanner = new API.URLScanner(this);
            this.vulnerabilityScanner = new API.VulnerabilityScanner(this);
            this.radar = new API.Radar(this);
            this.botManagement = new API.BotManagement(this);
            this.fraud = new API.Fraud(this);
            this.precursor = new API.Precursor(this);
            this.originPostQuantumEncryption = new API.OriginPostQuantumEncryption(this);
            this.originTLSComplianceModes = new API.OriginTLSComplianceModes(this);
            this.googleTagGateway = new API.GoogleTagGateway(this);
            this.zaraz = new API.Zaraz(this);
            this.speed = new API.Speed(this);
            this.dcvDelegation = new API.DCVDelegation(this);
            this.hostnames = new API.Hostnames(this);
            this.snippets = new API.Snippets(this);
            this.realtimeKit = new API.RealtimeKit(this);
            this.calls = new API.Calls(this);
            this.moq = new API.MoQ(this);
            this.managedDefense = new API.ManagedDefense(this);
            this.cloudforceOne = new API.CloudforceOne(this);
            this.aiGateway = new API.AIGateway(this);
            this.flagship = new API.Flagship(this);
            this.iam = new API.IAM(this);
            this.cloudConnector = new API.CloudConnector(this);
            this.botnetFeed = new API.BotnetFeed(this);
            this.securityTXT = new API.SecurityTXT(this);
            this.workflows = new API.Workflows(this);
            this.resourceSharing = new API.ResourceSharing(this);
            this.resourceTagging = new API.ResourceTagging(this);
            this.leakedCredentialChecks = new API.LeakedCredentialChecks(this);
            this.contentScanning = new API.ContentScanning(this);
            this.aiSecurity = new API.AISecurity(this);
            this.csamScanner = new API.CsamScanner(this);
            this.abuseReports = new API.AbuseReports(this);
            this.ai = new API.AI(this);
            this.aiAudit = new API.AIAudit(this);
            this.aiSearch = new API.AISearch(this);
            this.securityCenter = new API.SecurityCenter(this);
            this.browserRendering = new API.BrowserRendering(this);
            this.customPages = new API.CustomPages(this);
            this.secretsStore = new API.SecretsStore(this);
            this.pipelines = new API.Pipelines(this);
            this.schemaValidation = new API.SchemaValidation(this);
            this.tokenValidation = new API.TokenValidation(this);
            this.fieldExtractors = new API.FieldExtractors(this);
        }
    }
    _a = Cloudflare;
    Cloudflare.Cloudflare = _a;
    Cloudflare.CloudflareError = Errors.CloudflareError;
    Cloudflare.APIError = Errors.APIError;
    Cloudflare.APIConnectionError = Errors.APIConnectionError;
    Cloudflare.APIConnectionTimeoutError = Errors.APIConnectionTimeoutError;
    Cloudflare.APIUserAbortError = Errors.APIUserAbortError;
    Cloudflare.NotFoundError = Errors.NotFoundError;
    Cloudflare.ConflictError = Errors.ConflictError;
    Cloudflare.RateLimitError = Errors.RateLimitError;
    Cloudflare.BadRequestError = Errors.BadRequestError;
    Cloudflare.AuthenticationError = Errors.AuthenticationError;
    Cloudflare.InternalServerError = Errors.InternalServerError;
    Cloudflare.PermissionDeniedError = Errors.PermissionDeniedError;
    Cloudflare.UnprocessableEntityError = Errors.UnprocessableEntityError;
    Cloudflare.toFile = Uploads.toFile;
    Cloudflare.Accounts = Accounts;
    Cloudflare.Organizations = Organizations;
    Cloudflare.Tenants = Tenants;
    Cloudflare.OriginCACertificates = OriginCACertificates;
    Cloudflare.IPs = IPs;
    Cloudflare.Memberships = Memberships;
    Cloudflare.User = User;
    Cloudflare.Zones = Zones;
    Cloudflare.LoadBalancers = LoadBalancers;
    Cloudflare.Cache = Cache;
    Cloudflare.SSL = SSL;
    Cloudflare.ACM = ACM;
    Cloudflare.AnalyticsQuery = AnalyticsQuery;
    Cloudflare.Argo = Argo;
    Cloudflare.CertificateAuthorities = CertificateAuthorities;
    Cloudflare.ClientCertificates = ClientCertificates;
    Cloudflare.CustomCertificates = CustomCertificates;
    Cloudflare.CustomCsrs = CustomCsrs;
    Cloudflare.CustomHostnames = CustomHostnames;
    Cloudflare.CustomNameservers = CustomNameservers;
    Cloudflare.TenantCustomNameservers = TenantCustomNameservers;
    Cloudflare.DNSFirewall = DNSFirewall;
    Cloudflare.DNS = DNS;
    Cloudflare.EmailSecurity = EmailSecurity;
    Cloudflare.EmailAuth = EmailAuth;
    Cloudflare.EmailRouting = EmailRouting;
    Cloudflare.EmailSending = EmailSending;
    Cloudflare.Filters = Filters;
    Cloudflare.Firewall = Firewall;
    Cloudflare.Healthchecks = Healthchecks;
    Cloudflare.KeylessCertificates = KeylessCertificates;
    Cloudflare.Logpush = Logpush;
    Cloudflare.Logs = Logs;
    Cloudflare.OriginTLSClientAuth = OriginTLSClientAuth;
    Cloudflare.PageRules = PageRules;
    Cloudflare.RateLimits = RateLimits;
    Cloudflare.WaitingRooms = WaitingRooms;
    Cloudflare.Web3 = Web3;
    Cloudflare.Workers = Workers;
    Cloudflare.KV = KV;
    Cloudflare.DurableObjects = DurableObjects;
    Cloudflare.Containers = Containers;
    Cloudflare.Queues = Queues;
    Cloudflare.APIGateway = APIGateway;
    Cloudflare.ManagedTransforms = ManagedTransforms;
    Cloudflare.PageShield = PageShield;
    Cloudflare.Rulesets = Rulesets;
    Cloudflare.URLNormalization = URLNormalization;
    Cloudflare.Spectrum = Spectrum;
    Cloudflare.Addressing = Addressing;
    Cloudflare.DLS = DLS;
    Cloudflare.AuditLogs = AuditLogs;
    Cloudflare.Billing = Billing;
    Cloudflare.BrandProtection = BrandProtection;
    Cloudflare.Diagnostics = Diagnostics;
    Cloudflare.Images = Images;
    Cloudflare.Intel = Intel;
    Cloudflare.MagicTransit = MagicTransit;
    Cloudflare.DDoSProtection = DDoSProtection;
    Cloudflare.MagicNetworkMonitoring = MagicNetworkMonitoring;
    Cloudflare.MagicCloudNetworking = MagicCloudNetworking;
    Cloudflare.NetworkInterconnects = NetworkInterconnects;
    Cloudflare.MTLSCertificates = MTLSCertificates;
    Cloudflare.Pages = Pages;
    Cloudflare.Registrar = Registrar;
    Cloudflare.RegistrarSandbox = RegistrarSandbox;
    Cloudflare.RequestTracers = RequestTracers;
    Cloudflare.Rules = Rules;
    Cloudflare.Stream = Stream;
    Cloudflare.Alerting = Alerting;
    Cloudflare.D1Resource = D1Resource;
    Cloudflare.R2 = R2;
    Cloudflare.R2DataCatalog = R2DataCatalog;
    Cloudflare.BasinCatalog = BasinCatalog;
    Cloudflare.WorkersForPlatforms = WorkersForPlatforms;
    Cloudflare.ZeroTrust = ZeroTrust;
    Cloudflare.Turnstile = Turnstile;
    Cloudflare.Connectivity = Connectivity;
    Cloudflare.HyperdriveResource = HyperdriveResource;
    Cloudflare.RUM = RUM;
    Cloudflare.Vectorize = Vectorize;
    Cloudflare.URLScanner = URLScanner;
    Cloudflare.VulnerabilityScanner = VulnerabilityScanner;
    Cloudflare.Radar = Radar;
    Cloudflare.BotManagement = BotManagement;
    Cloudflare.Fraud = Fraud;
    Cloudflare.Precursor = Precursor;
    Cloudflare.OriginPostQuantumEncryption = OriginPostQuantumEncryption;
    Cloudflare.OriginTLSComplianceModes = OriginTLSComplianceModes;
    Cloudflare.GoogleTagGateway = GoogleTagGateway;
    Cloudflare.Zaraz = Zaraz;
    Cloudflare.Speed = Speed;
    Cloudflare.DCVDelegation = DCVDelegation;
    Cloudflare.Hostnames = Hostnames;
    Cloudflare.Snippets = Snippets;
    Cloudflare.RealtimeKit = RealtimeKit;
    Cloudflare.Calls = Calls;
    Cloudflare.MoQ = MoQ;
    Cloudflare.ManagedDefense = ManagedDefense;
    Cloudflare.CloudforceOne = CloudforceOne;
    Cloudflare.AIGateway = AIGateway;
    Cloudflare.Flagship = Flagship;
    Cloudflare.IAM = IAM;
    Cloudflare.CloudConnector = CloudConnector;
    Cloudflare.BotnetFeed = BotnetFeed;
    Cloudflare.SecurityTXT = SecurityTXT;
    Cloudflare.Workflows = Workflows;
    Cloudflare.ResourceSharing = ResourceSharing;
    Cloudflare.ResourceTagging = ResourceTagging;
    Cloudflare.LeakedCredentialChecks = LeakedCredentialChecks;
    Cloudflare.ContentScanning = ContentScanning;
    Cloudflare.AISecurity = AISecurity;
    Cloudflare.CsamScanner = CsamScanner;
    Cloudflare.AbuseReports = AbuseReports;
    Cloudflare.AI = AI;
    Cloudflare.AIAudit = AIAudit;
    Cloudflare.AISearch = AISearch;
    Cloudflare.SecurityCenter = SecurityCenter;
    Cloudflare.BrowserRendering = BrowserRendering;
    Cloudflare.CustomPages = CustomPages;
    Cloudflare.SecretsStore = SecretsStore;
    Cloudflare.Pipelines = Pipelines;
    Cloudflare.SchemaValidation = SchemaValidation;
    Cloudflare.TokenValidation = TokenValidation;
    Cloudflare.FieldExtractors = FieldExtractors;
    return Cloudflare;
})()));
//# sourceMappingURL=client.mjs.map
// EXTERNAL MODULE: ./node_modules/cloudflare/core/resource.mjs
var resource = __webpack_require__(4123);
;// CONCATENATED MODULE: ./node_modules/cloudflare/tree-shakable.mjs
// File generated from our OpenAPI spec by Stainless. See CONTRIBUTING.md for details.



/**
 * Creates a client with a subset of the available resources to reduce
 * bundle size.
 * Import the resource classes you need from `cloudflare/resources/*`.
 * Use the BaseResource variants if you do not need to use subresources.
 *
 * @example
 * ```ts
 * import { Accounts } from `cloudflare/resources/accounts`;
 * import { createClient } from `cloudflare/tree-shakable`;
 *
 * const client = createClient({
 *   resources: [Accounts],
 * });
 * ```
 */
function createClient(options) {
    const client = new BaseCloudflare(options);
    for (const ResourceClass of options.resources) {
        const resourceInstance = new ResourceClass(client);
        let object = client;
        for (const part of ResourceClass._key.slice(0, -1)) {
            if ((0,utils_values/* hasOwn */.$3)(object, part)) {
                object = object[part];
            }
            else {
                Object.defineProperty(object, part, {
                    value: (object = {}),
                    configurable: true,
                    enumerable: true,
                    writable: true,
                });
            }
        }
        const name = ResourceClass._key.at(-1);
        if (!(0,utils_values/* hasOwn */.$3)(object, name)) {
            Object.defineProperty(object, name, {
                value: resourceInstance,
                configurable: true,
                enumerable: true,
                writable: true,
            });
        }
        else {
            if (object[name] instanceof resource/* APIResource */.h) {
                throw new TypeError(`Resource at ${ResourceClass._key.join('.')} already exists!`);
            }
            else {
                object[name] = Object.assign(resourceInstance, object[name]);
            }
        }
    }
    return client;
}
//# sourceMappingURL=tree-shakable.mjs.map

/***/ })

};
