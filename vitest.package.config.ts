import { defineConfig } from "vitest/config"

// The package test: packs effect-grace and installs the tarball into scratch projects outside the repo.
export default defineConfig({
  test: {
    include: ["test/package/**/*.test.ts"],
    // Installing from the registry takes a while; every wait in the tests themselves is bounded.
    testTimeout: 120_000,
    hookTimeout: 600_000,
    reporters: ["default", "json"],
    outputFile: { json: ".vitest-package-results.json" }
  }
})
