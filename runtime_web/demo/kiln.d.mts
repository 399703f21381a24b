// The types of "./kiln.mjs", the runtime the site serves beside the app (build.mjs keeps that
// import external): for the type check, the runtime's own sources. Never bundled.
export * from "../src/index";
