module github.com/your-org/your-service

go 1.19
