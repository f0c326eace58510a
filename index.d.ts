// Public types: the declarations emitted by `tsc` from lib/ into dist/.
export * from './dist/index';
