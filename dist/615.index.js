export const id = 615;
export const ids = [615];
export const modules = {

/***/ 7615:
/***/ ((__unused_webpack_module, __webpack_exports__, __webpack_require__) => {

__webpack_require__.r(__webpack_exports__);
/* harmony export */ __webpack_require__.d(__webpack_exports__, {
/* harmony export */   APIConnectionTimeoutError: () => (/* reexport safe */ cloudflare_core_error__WEBPACK_IMPORTED_MODULE_1__.qA),
/* harmony export */   APIError: () => (/* reexport safe */ cloudflare_core_error__WEBPACK_IMPORTED_MODULE_1__.LG),
/* harmony export */   makeClient: () => (/* binding */ makeClient)
/* harmony export */ });
/* harmony import */ var cloudflare_core_error__WEBPACK_IMPORTED_MODULE_1__ = __webpack_require__(831);
/* harmony import */ var cloudflare_tree_shakable__WEBPACK_IMPORTED_MODULE_2__ = __webpack_require__(3151);
/* harmony import */ var cloudflare_resources_user_tokens_tokens__WEBPACK_IMPORTED_MODULE_3__ = __webpack_require__(3934);
/* harmony import */ var cloudflare_resources_accounts_tokens_tokens__WEBPACK_IMPORTED_MODULE_4__ = __webpack_require__(7565);
/* harmony import */ var cloudflare_resources_workers_scripts_secrets__WEBPACK_IMPORTED_MODULE_5__ = __webpack_require__(1223);
/* harmony import */ var cloudflare_resources_workers_scripts_deployments__WEBPACK_IMPORTED_MODULE_6__ = __webpack_require__(324);
/* harmony import */ var cloudflare_resources_zero_trust_access_service_tokens__WEBPACK_IMPORTED_MODULE_7__ = __webpack_require__(6460);
/* harmony import */ var _redact_js__WEBPACK_IMPORTED_MODULE_0__ = __webpack_require__(6670);
/**
 * The official `cloudflare` SDK, with only the token resources, the Workers script secrets and
 * deployments, and the Access service tokens (`cloudflare/tree-shakable`; the `Base\u2026` classes leave out their subresources).
 * tokens.ts loads this module on its first call (`import()`): the SDK's client module imports
 * every resource of the API, about 3 MB of the bundle and most of the start-up time, and ncc puts a
 * dynamically imported module into a chunk of its own.
 */









function makeClient(options) {
    const { rate, log } = options;
    return (0,cloudflare_tree_shakable__WEBPACK_IMPORTED_MODULE_2__/* .createClient */ .U)({
        resources: [cloudflare_resources_user_tokens_tokens__WEBPACK_IMPORTED_MODULE_3__/* .Tokens */ .D, cloudflare_resources_accounts_tokens_tokens__WEBPACK_IMPORTED_MODULE_4__/* .Tokens */ .D, cloudflare_resources_workers_scripts_secrets__WEBPACK_IMPORTED_MODULE_5__/* .BaseSecrets */ .j, cloudflare_resources_workers_scripts_deployments__WEBPACK_IMPORTED_MODULE_6__/* .BaseDeployments */ .M, cloudflare_resources_zero_trust_access_service_tokens__WEBPACK_IMPORTED_MODULE_7__/* .BaseServiceTokens */ .t],
        apiToken: options.apiToken,
        // Explicit nulls: the SDK would otherwise pick up CLOUDFLARE_API_KEY / CLOUDFLARE_EMAIL /
        // CLOUDFLARE_API_USER_SERVICE_KEY from the runner's environment and send them as well.
        apiKey: null,
        apiEmail: null,
        userServiceKey: null,
        baseURL: options.baseURL,
        maxRetries: 0,
        timeout: options.timeoutMs,
        // Every answer's rate-limit headers and date are read, failed ones included.
        fetch: async (url, init) => {
            const response = await fetch(url, init);
            rate.observe(response.headers);
            return response;
        },
        logLevel: 'warn',
        logger: {
            error: (message) => log.debug((0,_redact_js__WEBPACK_IMPORTED_MODULE_0__/* .scrub */ ._I)(message)),
            warn: (message) => log.debug((0,_redact_js__WEBPACK_IMPORTED_MODULE_0__/* .scrub */ ._I)(message)),
            info: () => undefined,
            debug: () => undefined
        }
    });
}


/***/ })

};
