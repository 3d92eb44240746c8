/**
 * What is known of one token's values: its id always, its value and its R2 Secret Access Key
 * when the inputs (or a create) gave them. Which secrets can be written for a token depends on
 * which of these are known.
 */
import type { SecretField } from './settings.js'

export interface Credentials {
  /** Token id = R2 Access Key ID. */
  id: string
  /** The token value (only create returns it; otherwise from the `current-token` input). */
  value?: string
  /** Lowercase hex SHA-256 of the value. */
  secretAccessKey?: string
}

export function fieldValue(field: SecretField, credentials: Credentials): string | undefined {
  switch (field) {
    case 'token':
      return credentials.value
    case 'access-key-id':
      return credentials.id
    case 'secret-access-key':
      return credentials.secretAccessKey
  }
}

/** The fields among `fields` whose value is not known for `credentials`. */
export function missingFields(credentials: Credentials, fields: SecretField[]): SecretField[] {
  return [...new Set(fields)].filter(field => fieldValue(field, credentials) === undefined)
}
