'use strict';
// Public entry: the compiled TypeScript API in dist/ (built by `npm run build`).
module.exports = require('./dist/index.js');
