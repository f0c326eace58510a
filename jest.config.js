'use strict';

/** @type {import('jest').Config} */
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/__test__'],
  testMatch: ['**/*.test.js'],
  testTimeout: 30000,
  // Native engines are shared per process; running files in parallel workers keeps them apart.
  maxWorkers: 2,
};
