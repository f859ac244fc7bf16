"""Who answers: the Teacher interface, OpenAI/Azure/mock backends and their factory, endpoints, request shape, rate limits, the response cache, images for vision teachers.
Imports tasks and below; task code sees only Teacher, ChatRequest and ChatReply."""
